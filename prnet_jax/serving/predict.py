r"""Prediction from the command line: an image, a folder of images or a video -> per-face
meshes, landmarks, poses, depth and overlays (`prnet_jax.serving.outputs`).

    python -m prnet_jax.serving.predict --input=FILE_OR_DIR_OR_VIDEO --output=DIR \
        [--checkpoint=pretrained] [--detector=auto] [--outputs=obj,landmarks,...] \
        [--no_detect | --boxes=L,T,R,B | --boxes=boxes.json] [--texture_size=256]

Compiled programs are kept in a persistent cache (`prnet_jax.runtime.enable_compilation_cache`;
`--no_compilation_cache` turns it off), so only the first run compiles the network.

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
                                         apply_test_time_flags, whole_image_box)

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


# Overlay video codecs, the first one this OpenCV can write is used: H.264 (.mp4) and VP8
# (.webm) play in browsers; MPEG-4 Part 2 (.mp4) is the last resort. (PyPI's OpenCV wheels
# write no H.264; they write VP8.)
VIDEO_CODECS = (('avc1', '.mp4'), ('VP80', '.webm'), ('mp4v', '.mp4'))


def open_video_writer(stem: str, fps: float, size: tuple[int, int]):
  """(cv2.VideoWriter, path) for `stem`_overlay with the first codec of VIDEO_CODECS that opens."""
  import cv2
  for fourcc, ext in VIDEO_CODECS:
    path = f'{stem}_overlay{ext}'
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if writer.isOpened():
      return writer, path
    writer.release()
    if os.path.exists(path) and not os.path.getsize(path):
      os.remove(path)
  raise PredictError(f'{stem}_overlay: no video codec of {[c for c, _ in VIDEO_CODECS]} can be '
                     f'written by this OpenCV')


def predict_video(predictor: Predictor, path: str, out_dir: str, batch: int = 16,
                  redetect_every: int = 32, stem: Optional[str] = None, boxes_for=None,
                  box_convention: str = 'image_info', smooth: bool = True) -> int:
  """Frames in batches -> per-frame JSON lines and an overlay video; returns frames done.

  Faces are tracked: a batch's frames are cropped around the landmarks of the faces of the
  previous batch's last frame (then re-cropped around their own, as boxes are), and the
  detector runs only on the first batch, every `redetect_every` frames, and after a batch
  without faces (1: detect in every frame). `smooth`: landmarks and pose angles through a
  One-Euro filter per face (`smoothing.FaceSmoother`) in the JSON lines and the overlay."""
  import time

  import cv2

  from prnet_jax.serving import outputs, smoothing
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise PredictError(f'{path}: cannot open the video')
  total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
  fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
  stem = os.path.join(out_dir, stem or os.path.splitext(os.path.basename(path))[0])
  writer, done, start = None, 0, time.time()
  track, since = None, 0
  smoother = smoothing.FaceSmoother(fps) if smooth else None
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
      given = None if boxes_for is None else boxes_for(os.path.basename(path), frames[0])
      if given is not None:  # the caller's boxes, for every frame
        results = predictor.predict_batch(frames, [given] * len(frames),
                                          box_convention=box_convention)
      else:
        detect = track is None or since >= redetect_every
        results = predictor.predict_batch(frames, None if detect else [track] * len(frames))
        since = len(frames) if detect else since + len(frames)
        track = _tracked_boxes(results[-1])
      for k, (frame, faces) in enumerate(zip(frames, results)):
        if smoother is not None:
          faces = smoother(faces)
        js.write(json.dumps({'frame': done + k, 'faces': [f.to_json() for f in faces]}) + '\n')
        im = np.asarray(outputs.overlay(frame, faces))
        if writer is None:
          writer, _ = open_video_writer(stem, fps, (im.shape[1], im.shape[0]))
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


class BoxError(ValueError):
  """A --boxes value that cannot be read."""


def parse_boxes(spec: str):
  """--boxes -> a function (input file name, image) -> (N, 4) boxes or None (detect).

  `spec` is inline boxes 'L,T,R,B[;L,T,R,B...]' (for every input), a .json file mapping input
  file names to lists of [L, T, R, B] (inputs it does not name are detected), or a text file
  with one 'L T R B' (or comma-separated) box per line (for every input)."""
  def boxes_from(rows, where):
    try:
      arr = np.asarray(rows, np.float64).reshape(-1, 4)
    except (ValueError, TypeError):
      raise BoxError(f'{where}: boxes must be groups of four numbers (left, top, right, '
                     f'bottom)') from None
    if not len(arr) or not np.isfinite(arr).all() or (arr[:, 2] <= arr[:, 0]).any() or (
        arr[:, 3] <= arr[:, 1]).any():
      raise BoxError(f'{where}: each box needs right > left and bottom > top (finite numbers)')
    return arr

  if os.path.isfile(spec):
    if spec.lower().endswith('.json'):
      import json
      try:
        with open(spec) as f:
          table = json.load(f)
      except (OSError, ValueError) as e:
        raise BoxError(f'{spec}: not a readable JSON file ({e})') from None
      if not isinstance(table, dict):
        raise BoxError(f'{spec}: expected {{"file name": [[left, top, right, bottom], ...]}}')
      table = {os.path.basename(k): boxes_from(v, f'{spec}: {k}') for k, v in table.items()}
      return lambda name, image: table.get(os.path.basename(name))
    with open(spec) as f:
      rows = [line.replace(',', ' ').split() for line in f if line.strip()]
    try:
      fixed = boxes_from([[float(v) for v in r] for r in rows], spec)
    except ValueError as e:
      raise BoxError(str(e) if isinstance(e, BoxError) else f'{spec}: not numbers') from None
  else:
    try:
      fixed = boxes_from([[float(v) for v in b.split(',')] for b in spec.split(';') if b.strip()],
                         f'--boxes={spec}')
    except ValueError as e:
      raise BoxError(str(e) if isinstance(e, BoxError) else
                     f'--boxes={spec}: neither a file nor boxes L,T,R,B[;L,T,R,B...]') from None
  return lambda name, image: fixed


def run(predictor: Predictor, inputs: str, out_dir: str, batch: int = 16,
        redetect_every: int = 32, boxes_for=None, box_convention: str = 'image_info',
        outputs: Sequence[str] = None, texture_size: Optional[int] = None,
        smooth: bool = True) -> int:
  """Predicts for a file, a folder of images or a video; one message per bad file, the rest
  still processed. Returns the number of inputs that failed.

  `boxes_for(file name, image)`: the faces' boxes (read by `box_convention`), or None to detect
  (videos: every frame uses the boxes of the video's first frame); `outputs` and
  `texture_size` as `outputs.write_outputs` (default: every output)."""
  import time

  from prnet_jax.serving import outputs as outputs_lib
  kinds = outputs_lib.OUTPUTS if outputs is None else outputs
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
        n = predict_video(predictor, path, out_dir, batch, redetect_every, stems[i],
                          boxes_for, box_convention, smooth)
        msg = f'{name}: {n} frames'
      else:
        image = image_io.load_photo(path)
        boxes = None if boxes_for is None else boxes_for(name, image)
        faces = predictor.predict(image, boxes, box_convention=box_convention)
        if not faces:
          raise PredictError(f'{path}: no face found (for faces the detector misses, pass '
                             f'--boxes, or --no_detect for images cropped to the face)')
        meshes = ([predictor.dense_mesh(f, image) for f in faces]
                  if {'obj', 'textured', 'ply'} & set(kinds) else None)
        outputs_lib.write_outputs(faces, image, os.path.join(out_dir, stems[i]), meshes, kinds,
                                  texture_size)
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

  from prnet_jax.geometry.transforms import BOX_CONVENTIONS
  from prnet_jax.serving.outputs import OUTPUTS, parse_outputs
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
  p.add_argument('--outputs', default='all',
                 help='comma-separated outputs to write: ' + ','.join(OUTPUTS) + ' (default all)')
  p.add_argument('--texture_size', type=int, default=256,
                 help="side of the textured mesh's UV texture, sampled from the image at the "
                      "resampled position map (0: the model's map size)")
  faces = p.add_mutually_exclusive_group()
  faces.add_argument('--no_detect', action='store_true',
                     help='each image is already a face crop: use it whole, no detector (the '
                          "official demo's --isDlib False)")
  faces.add_argument('--boxes', default=None,
                     help="face boxes instead of the detector: 'L,T,R,B[;L,T,R,B...]' for every "
                          "input, a .json file {file name: [[L,T,R,B], ...]}, or a text file "
                          "with one 'L T R B' per line")
  p.add_argument('--box_convention', default='image_info',
                 choices=[c for c in BOX_CONVENTIONS],
                 help="how --boxes become crops: 'image_info' (the official rule for given "
                      "boxes: side 1.6 x box), 'detector' (for boxes from a dlib-like detector) "
                      "or 'crop' (the box is the crop)")
  p.add_argument('--smooth', action=argparse.BooleanOptionalAction, default=True,
                 help='videos: smooth landmarks and pose over frames (One-Euro filter per face)')
  p.add_argument('--compilation_cache', action=argparse.BooleanOptionalAction, default=True,
                 help='keep compiled programs in the user cache folder (~/.cache/prnet_jax/xla, '
                      'or $PRNET_JAX_CACHE_DIR) so later runs start faster')
  add_test_time_flags(p)
  a = p.parse_args(argv)
  try:
    kinds = parse_outputs(a.outputs)
    boxes_for = parse_boxes(a.boxes) if a.boxes else None
  except ValueError as e:
    print(f'error: {e}')
    return 2
  if a.texture_size < 0:
    print('error: --texture_size must be 0 (the map size) or positive')
    return 2
  box_convention = a.box_convention
  if a.no_detect:
    boxes_for, box_convention = (lambda name, image: whole_image_box(image)), 'crop'
  problem = output_folder_problem(a.output)
  if problem:
    print(f'error: {problem}')
    return 2
  if a.compilation_cache:
    from prnet_jax import runtime
    runtime.enable_compilation_cache()
  try:
    predictor = apply_test_time_flags(
        Predictor.from_checkpoint(a.checkpoint, a.uv_assets, a.detector), a)
    predictor.mesh_resolution = a.mesh_resolution
    if boxes_for is None:  # fail here if it can't be made (given boxes may never need it)
      predictor.detector  # pylint: disable=pointless-statement
  except (PredictError, ValueError) as e:
    print(f'error: {e}')
    return 2
  if a.batch < 1 or a.redetect_every < 1:
    print('error: --batch and --redetect_every must be at least 1')
    return 2
  failed = run(predictor, a.input, a.output, a.batch, a.redetect_every, boxes_for,
               box_convention, kinds, a.texture_size or None, a.smooth)
  return 1 if failed else 0


if __name__ == '__main__':
  import sys
  sys.exit(main())
