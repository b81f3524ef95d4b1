r"""Prediction from the command line: an image, a folder of images or a video -> per-face
meshes, landmarks, poses, depth and overlays (`prnet_jax.serving.outputs`).

    python -m prnet_jax.serving.predict --input=FILE_OR_DIR_OR_VIDEO --output=DIR \
        [--checkpoint=pretrained] [--detector=auto]

One message per bad file; the rest are still processed. Videos go through in batches of frames,
faces tracked between detections (`predict_video`). From Python, use
`prnet_jax.serving.inference.Predictor` (also `from prnet_jax import Predictor`).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from prnet_jax.data import image_io
from prnet_jax.nn import checkpoints
from prnet_jax.serving import detectors
from prnet_jax.serving.inference import (Face, PredictError, Predictor, add_test_time_flags,
                                         apply_test_time_flags)

# ------------------------------------------------------------------------------- CLI

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.gif')
VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v')


def _bar(done: int, total: int, start: float, what: str) -> str:
  import time
  el = time.time() - start
  rate = done / max(el, 1e-9)
  eta = (total - done) / max(rate, 1e-9)
  filled = int(20 * done / max(total, 1))
  return f'[{"#" * filled}{"." * (20 - filled)}] {done}/{total} {rate:.1f}/s ETA {eta:.0f}s {what}'


def _tracked_boxes(faces: Sequence[Face]) -> Optional[np.ndarray]:
  """Boxes of faces' 68 landmarks (their crops for the next frames), or None for no face."""
  if not faces:
    return None
  return np.array([[*f.landmarks[:, :2].min(0), *f.landmarks[:, :2].max(0)] for f in faces])


def output_stems(paths: Sequence[str]) -> list[str]:
  """Each input's output name (before `_mesh.obj`, `_frames.jsonl`, ...): its file name without
  the extension, or with it (`face_jpg`, `face_png`) where two inputs of one run share a name
  (compared case-blind, as macOS and Windows file systems do), so no input's results overwrite
  another's."""
  base = [os.path.splitext(os.path.basename(p)) for p in paths]
  counts: dict[str, int] = {}
  for stem, _ in base:
    counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
  out, taken = [], set()
  for stem, ext in base:
    name = stem if counts[stem.lower()] == 1 else f'{stem}_{ext.lstrip(".")}'
    unique, k = name, 2
    while unique.lower() in taken:  # still equal (FACE.jpg and face.JPG): number them
      unique, k = f'{name}_{k}', k + 1
    taken.add(unique.lower())
    out.append(unique)
  return out


def predict_video(predictor: Predictor, path: str, out_dir: str, batch: int = 16,
                  redetect_every: int = 32, stem: Optional[str] = None) -> int:
  """Frames in batches -> per-frame JSON lines and an overlay video; returns frames done.

  Faces are tracked: a batch's frames are cropped around the landmarks of the faces of the
  previous batch's last frame (then re-cropped around their own, as boxes are), and the
  detector runs only on the first batch, every `redetect_every` frames, and after a batch
  without faces (1: detect in every frame)."""
  import time

  import cv2

  from prnet_jax.serving import outputs
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise PredictError(f'{path}: cannot open the video')
  total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
  fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
  stem = os.path.join(out_dir, stem or os.path.splitext(os.path.basename(path))[0])
  writer, done, start = None, 0, time.time()
  track, since = None, 0
  import json
  with open(stem + '_frames.jsonl', 'w') as js:
    while True:
      frames = []
      for _ in range(batch):
        ok, frame = cap.read()
        if not ok:
          break
        frames.append(np.ascontiguousarray(frame[..., ::-1]))
      if not frames:
        break
      detect = track is None or since >= redetect_every
      results = predictor.predict_batch(frames, None if detect else [track] * len(frames))
      since = len(frames) if detect else since + len(frames)
      track = _tracked_boxes(results[-1])
      for k, (frame, faces) in enumerate(zip(frames, results)):
        js.write(json.dumps({'frame': done + k, 'faces': [f.to_json() for f in faces]}) + '\n')
        im = np.asarray(outputs.overlay(frame, faces))
        if writer is None:
          writer = cv2.VideoWriter(stem + '_overlay.mp4', cv2.VideoWriter_fourcc(*'mp4v'), fps,
                                   (im.shape[1], im.shape[0]))
        writer.write(np.ascontiguousarray(im[..., ::-1]))
      done += len(frames)
      print('\r' + _bar(done, max(total, done), start, os.path.basename(path)), end='',
            flush=True)
  cap.release()
  if writer is not None:
    writer.release()
  print()
  if done == 0:
    raise PredictError(f'{path}: no frames could be read')
  if total and total - done > max(1, total // 100):  # counts can be estimates: a margin
    raise IncompleteVideo(f'{path}: only {done} of the {total} frames it declares could be '
                          f'read (the file is truncated or damaged); the outputs hold those',
                          done)
  return done


class IncompleteVideo(PredictError):
  """A video that ended well before the frame count it declares; `frames` were processed and
  their outputs written."""

  def __init__(self, message: str, frames: int):
    super().__init__(message)
    self.frames = frames


def output_folder_problem(path: str) -> Optional[str]:
  """None when `path` is (or could be made) a writable folder, else why not, in one line:
  checked before the model loads, so that a bad --output costs nothing."""
  try:
    os.makedirs(path, exist_ok=True)
  except FileExistsError:
    return f'--output={path} is a file, not a folder'
  except OSError as e:
    return f'--output={path}: cannot create it ({e.strerror or e})'
  if not os.path.isdir(path):
    return f'--output={path} is not a folder'
  if not os.access(path, os.W_OK | os.X_OK):
    return f'--output={path}: not writable'
  return None


def run(predictor: Predictor, inputs: str, out_dir: str, batch: int = 16,
        redetect_every: int = 32) -> int:
  """Predicts for a file, a folder of images or a video; one message per bad file, the rest
  still processed. Returns the number of inputs that failed."""
  import time

  from prnet_jax.serving import outputs
  if os.path.isdir(inputs):
    files = sorted(os.path.join(inputs, f) for f in os.listdir(inputs)
                   if not f.startswith('.') and os.path.isfile(os.path.join(inputs, f)))
  elif os.path.exists(inputs):
    files = [inputs]
  else:
    print(f'error: {inputs}: no such file or folder', flush=True)
    return 1
  os.makedirs(out_dir, exist_ok=True)
  failed, incomplete, start = 0, 0, time.time()
  stems = output_stems(files)
  for i, path in enumerate(files):
    name = os.path.basename(path)
    try:
      if path.lower().endswith(VIDEO_EXTS):
        n = predict_video(predictor, path, out_dir, batch, redetect_every, stems[i])
        msg = f'{name}: {n} frames'
      else:
        image = image_io.load_photo(path)
        faces = predictor.predict(image)
        if not faces:
          raise PredictError(f'{path}: no face found (pass boxes or landmarks for crops the '
                             f'detector misses)')
        outputs.write_outputs(faces, image, os.path.join(out_dir, stems[i]),
                              [predictor.dense_mesh(f, image) for f in faces])
        msg = f'{name}: {len(faces)} face(s)'
    except IncompleteVideo as e:
      failed += 1
      incomplete += 1
      msg = f'{name}: {e.frames} frames, incomplete: {e}'
    except (PredictError, image_io.ImageError) as e:
      failed += 1
      msg = f'skipped: {e}'
    except OSError as e:  # writing the outputs (disk full, permissions): the rest still run
      failed += 1
      msg = f'skipped: {path}: cannot write its outputs ({e.filename or out_dir}: {e.strerror})'
    print(_bar(i + 1, len(files), start, msg), flush=True)
  print(f'{len(files) - failed} of {len(files)} inputs done, {failed - incomplete} skipped'
        + (f', {incomplete} incomplete' if incomplete else '') + f'; output in {out_dir}',
        flush=True)
  return failed


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse
  p = argparse.ArgumentParser(description='PRNet prediction: meshes, landmarks, poses.')
  p.add_argument('--checkpoint', default=checkpoints.PRETRAINED,
                 help="checkpoint directory, a training run's workdir, or 'pretrained' (the "
                      "bundled model; the default)")
  p.add_argument('--input', required=True, help='image, folder of images, or video')
  p.add_argument('--output', required=True, help='output folder')
  p.add_argument('--uv_assets', default=None,
                 help="'ict', 'procedural' or an official uv-data folder (for official weights); "
                      "default: the training run's own, else 'procedural'")
  p.add_argument('--batch', type=int, default=16, help='video frames per forward pass')
  p.add_argument('--redetect_every', type=int, default=32,
                 help='video: run the detector every N frames, tracking faces in between '
                      '(1: detect in every frame)')
  p.add_argument('--detector', default='auto', choices=detectors.NAMES,
                 help="face detector: 'auto' (dlib_cnn if installed, else haar), 'dlib_cnn', "
                      "'dlib_hog' or 'haar'")
  p.add_argument('--mesh_resolution', type=int, default=256,
                 help="meshes from the map resampled to this many px of its UV layout (0: the "
                      "model's own map size)")
  add_test_time_flags(p)
  a = p.parse_args(argv)
  problem = output_folder_problem(a.output)
  if problem:
    print(f'error: {problem}')
    return 2
  try:
    predictor = apply_test_time_flags(
        Predictor.from_checkpoint(a.checkpoint, a.uv_assets, a.detector), a)
    predictor.mesh_resolution = a.mesh_resolution
    predictor.detector  # pylint: disable=pointless-statement  # fail here if it can't be made
  except (PredictError, ValueError) as e:
    print(f'error: {e}')
    return 2
  if a.batch < 1 or a.redetect_every < 1:
    print('error: --batch and --redetect_every must be at least 1')
    return 2
  failed = run(predictor, a.input, a.output, a.batch, a.redetect_every)
  return 1 if failed else 0


if __name__ == '__main__':
  import sys
  sys.exit(main())
