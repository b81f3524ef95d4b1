"""A model on real photographs: a folder of AFLW2000-3D-format files (image + `.mat` with the
68 fitted 3D landmarks `pt3d_68`), scored file by file beside two baselines.

  python -m prnet_jax.serving.folder_eval --checkpoint=pretrained --input=DIR --output=DIR

Per file: the official landmark crop (`transforms.landmark_crop`: 1.6 x the box of the 68
ground-truth landmarks, as `launch.py --mode=eval` on `aflw2000_3d`), the model's 68 landmarks
mapped back to the photo, and their NME with the project's metrics (`metrics.nme`): 2D
normalised by sqrt(w * h) of the ground-truth box (the paper's protocol), 3D with both point
sets' z shifted to mean 0, by the same normaliser. Baselines, scored the same way:

* ``untrained``: the same network at its seed's initialisation;
* ``mean_shape``: the model's own mean 68 landmarks (its UV assets' canonical face), frontal,
  stretched onto the ground-truth 2D box (z by the mean of the two stretches): what knowing
  only the box gives.

Writes ``results.json`` and ``results.md`` (per file and mean) and ``overlays/NAME.png``
(ground truth green, prediction red, the model's dense points and pose box) plus
``overlays.png``, all of them side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import jax
import numpy as np

from prnet_jax.data import image_io, readers
from prnet_jax.evaluation import error_analysis, metrics
from prnet_jax.faces.uv_assets import UVAssets

METHODS = ('model', 'untrained', 'mean_shape')


def mean_shape_landmarks(assets: UVAssets) -> np.ndarray:
  """(68, 3) the assets' canonical landmarks in the image convention: x to the face's left
  (landmark 0 left of 16), y down (chin below the nose), z towards the viewer (nose tip in
  front of the jaw's ends)."""
  r = assets.resolution
  pos = np.zeros((r * r, 3), np.float32)
  pos[assets.face_indices] = assets.canonical_vertices
  lm = np.asarray(assets.landmarks(pos.reshape(r, r, 3)), np.float64)
  flip = np.array([1.0 if lm[16, 0] > lm[0, 0] else -1.0,
                   1.0 if lm[8, 1] > lm[30, 1] else -1.0,
                   1.0 if lm[30, 2] > lm[[0, 16], 2].mean() else -1.0])
  return lm * flip


def place_in_box(shape: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """(68, 3) `shape` stretched so its x, y span the box of `gt` (68, 2+); z by their mean."""
  lo, hi = shape[:, :2].min(0), shape[:, :2].max(0)
  glo, ghi = gt[:, :2].min(0), gt[:, :2].max(0)
  k = (ghi - glo) / (hi - lo)
  out = np.empty_like(shape)
  out[:, :2] = (shape[:, :2] - lo) * k + glo
  out[:, 2] = shape[:, 2] * k.mean()
  return out


def score(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
  """(2D NME, 3D NME) of (68, 3) image-frame landmarks against the ground truth."""
  return (float(metrics.nme(pred, gt, dims=2, norm='box')),
          float(metrics.nme(pred, gt, dims=3, norm='box', z_align='mean')))


def untrained_predictor(predictor, seed: int = 0):
  """A predictor with `predictor`'s network and assets at the seed's initialisation."""
  from prnet_jax.nn.model import init_variables
  from prnet_jax.serving.inference import Predictor
  variables = init_variables(predictor.model, jax.random.key(seed))
  return Predictor(predictor.model, variables, predictor.assets, predictor._detector,  # pylint: disable=protected-access
                   predictor.antialias)


def _load(image_path: str, mat_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(image, (68, 3) landmarks, (3,) pitch/yaw/roll in degrees; NaN without Pose_Para)."""
  try:
    mat = readers.load_mat(mat_path, {'pt3d_68': (3, 68), 'Pose_Para': None})
    raw = mat['Pose_Para']
    pose = readers.check_pose(mat_path, raw)
    # |yaw| as the protocol reads it: the fit's own, unwrapped (a fit at -351 deg counts as a
    # profile, ``readers.yaw_bucket``); pitch and roll wrapped into (-180, 180].
    angles = np.rad2deg([pose[0], np.asarray(raw, np.float64).reshape(-1)[1], pose[2]])
  except readers.SampleError:   # no usable Pose_Para (or no pt3d_68: said by this read)
    mat = readers.load_mat(mat_path, {'pt3d_68': (3, 68)})
    angles = np.full(3, np.nan)
  return (image_io.load_sample_image(image_path), np.asarray(mat['pt3d_68'], np.float64).T,
          angles)


def evaluate_folder(predictor, folder: str, output: Optional[str] = None,
                    seed: int = 0, baselines: bool = True, worst: int = 24,
                    overlays: str = 'auto', backdrop: str = 'photo') -> dict:
  """Scores every image + .mat pair of `folder`; returns {'files': [...], 'mean': {...},
  'skipped': [...], 'analysis': error_analysis.analyse(...)}, and writes the results and
  pictures under `output` when given.

  baselines: also score the untrained network and the mean shape. overlays: 'all' (one picture
  per file), 'worst' (the `worst` worst files), 'auto' (all up to 50 files, else the worst).
  backdrop: 'photo' or 'none' (landmarks on grey, for sheets that must not carry the photos).
  Memory stays bounded: pictures are written as they are drawn; the worst are redrawn at the
  end."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'{folder}: not a folder')
  if overlays not in ('all', 'worst', 'auto') or backdrop not in ('photo', 'none'):
    raise ValueError(f'overlays must be all, worst or auto (got {overlays!r}); backdrop photo '
                     f'or none (got {backdrop!r})')
  pairs = readers.find_pairs(folder)
  if not pairs:
    raise FileNotFoundError(f'{folder}: no image + .mat pairs (AFLW2000-3D format) found')
  if overlays == 'auto':
    overlays = 'all' if len(pairs) <= 50 else 'worst'
  methods = METHODS if baselines else ('model',)
  baseline = untrained_predictor(predictor, seed) if baselines else None
  mean_shape = mean_shape_landmarks(predictor.assets)
  if output:
    os.makedirs(os.path.join(output, 'overlays'), exist_ok=True)
  rows, skipped, kept = [], [], []
  preds, gts, angles = [], [], []
  for k, (image_path, mat_path) in enumerate(pairs):
    name = os.path.splitext(os.path.basename(mat_path))[0]
    try:
      image, gt, angle = _load(image_path, mat_path)
    except readers.SampleError as e:
      print(f'skipped {e}', flush=True)
      skipped.append({'file': name, 'reason': str(e)})
      continue
    face = predictor.predict(image, landmarks=gt[:, :2])[0]
    found = {'model': face.landmarks}
    if baselines:
      found['untrained'] = baseline.predict(image, landmarks=gt[:, :2])[0].landmarks
      found['mean_shape'] = place_in_box(mean_shape, gt)
    row = {'file': name}
    for method, p in found.items():
      row[f'{method}_2d'], row[f'{method}_3d'] = score(np.asarray(p, np.float64), gt)
    rows.append(row)
    kept.append((image_path, mat_path))
    preds.append(np.asarray(face.landmarks, np.float64))
    gts.append(gt)
    angles.append(angle)
    line = (f"[{k + 1}/{len(pairs)}] {name}: 2D NME {100 * row['model_2d']:.2f}%  3D "
            f"{100 * row['model_3d']:.2f}%")
    if baselines:
      line += (f"  (untrained {100 * row['untrained_2d']:.2f}%, mean shape "
               f"{100 * row['mean_shape_2d']:.2f}%)")
    print(line, flush=True)
    if output and overlays == 'all':
      _overlay(image, face, gt, backdrop).save(os.path.join(output, 'overlays', f'{name}.png'))
  if not rows:
    raise ValueError(f'{folder}: no readable samples ({len(skipped)} skipped)')
  keys = [f'{m}_{d}' for m in methods for d in ('2d', '3d')]
  analysis = error_analysis.analyse(np.stack(preds), np.stack(gts), np.stack(angles),
                                    [r['file'] for r in rows], worst)
  result = {'folder': os.path.abspath(folder), 'files': rows, 'skipped': skipped,
            'mean': {k: float(np.mean([r[k] for r in rows])) for k in keys},
            'analysis': analysis}
  if output:
    if overlays == 'worst':
      for i in analysis['worst']:
        image, gt, _ = _load(*kept[i])
        face = predictor.predict(image, landmarks=gt[:, :2])[0]
        _overlay(image, face, gt, backdrop).save(
            os.path.join(output, 'overlays', f"{rows[i]['file']}.png"))
      names = [rows[i]['file'] for i in analysis['worst']]
    else:
      names = [r['file'] for r in rows]
    _write(result, names, output)
  return result


def _overlay(image: np.ndarray, face, gt: np.ndarray, backdrop: str = 'photo'):
  from PIL import ImageDraw

  from prnet_jax.serving import outputs
  if backdrop == 'none':
    image = np.full_like(image, 96)
  im = outputs.overlay(image, [face])
  d = ImageDraw.Draw(im)
  r = max(1.5, 1.5 * max(image.shape[:2]) / 400)
  for x, y in gt[:, :2]:
    d.ellipse([x - r, y - r, x + r, y + r], outline=(40, 255, 40))
  return im


def markdown(result: dict) -> str:
  methods = [m for m in METHODS if f'{m}_2d' in result['mean']]
  keys = [f'{m}_{d}' for m in methods for d in ('2d', '3d')]
  titles = {'model': '', 'untrained': 'untrained ', 'mean_shape': 'mean shape '}
  cols = [f'{titles[m]}{d}' + (' NME' if m == 'model' else '') for m in methods
          for d in ('2D', '3D')]
  head = '| file | ' + ' | '.join(cols) + ' |\n|---|' + '---|' * len(keys) + '\n'
  line = lambda name, r: f'| {name} | ' + ' | '.join(f'{100 * r[k]:.2f}%' for k in keys) + ' |\n'
  body = ''.join(line(r['file'], r) for r in result['files'])
  return head + body + line(f"**mean of {len(result['files'])}**", result['mean'])


def _write(result: dict, names: Sequence[str], output: str, columns: int = 8) -> None:
  """results.json/.md, analysis.md and overlays.png (a grid of `names`' overlays, read back)."""
  from PIL import Image
  with open(os.path.join(output, 'results.json'), 'w') as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(output, 'results.md'), 'w') as f:
    f.write(markdown(result))
  with open(os.path.join(output, 'analysis.md'), 'w') as f:
    f.write(error_analysis.markdown(result['analysis'], f"Error analysis: {result['folder']}"))
  tile = 256
  cols = min(columns, len(names))
  sheet = Image.new('RGB', (tile * cols, tile * ((len(names) + cols - 1) // cols)))
  for i, name in enumerate(names):
    with Image.open(os.path.join(output, 'overlays', f'{name}.png')) as im:
      sheet.paste(im.convert('RGB').resize((tile, tile)), (tile * (i % cols), tile * (i // cols)))
  sheet.save(os.path.join(output, 'overlays.png'))


def main(argv: Optional[Sequence[str]] = None) -> int:
  from prnet_jax.serving.inference import (PredictError, Predictor, add_test_time_flags,
                                            apply_test_time_flags)
  p = argparse.ArgumentParser(description='Landmark NME on a folder of AFLW2000-3D-format files.')
  p.add_argument('--checkpoint', default='pretrained',
                 help="checkpoint directory, a run's workdir, or 'pretrained' (the default)")
  p.add_argument('--input', required=True, help='folder of image + .mat pairs')
  p.add_argument('--output', default=None, help='folder for results.json/.md and overlays')
  p.add_argument('--uv_assets', default=None, help="default: the checkpoint's own")
  p.add_argument('--seed', type=int, default=0, help="the untrained baseline's initialisation")
  p.add_argument('--baselines', action=argparse.BooleanOptionalAction, default=True,
                 help='also score the untrained network and the mean shape')
  p.add_argument('--worst', type=int, default=24, help='how many worst faces to list and draw')
  p.add_argument('--overlays', choices=('auto', 'all', 'worst'), default='auto',
                 help='pictures of every file, or of the worst (auto: all up to 50 files)')
  p.add_argument('--backdrop', choices=('photo', 'none'), default='photo',
                 help="'none': landmarks on grey (sheets that must not carry the photos)")
  add_test_time_flags(p)
  a = p.parse_args(argv)
  if a.worst < 1:
    p.error(f'--worst must be at least 1, got {a.worst}')
  try:
    predictor = apply_test_time_flags(Predictor.from_checkpoint(a.checkpoint, a.uv_assets), a)
    result = evaluate_folder(predictor, a.input, a.output, a.seed, a.baselines, a.worst,
                             a.overlays, a.backdrop)
  except (PredictError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if len(result['files']) <= 50:
    print(markdown(result), end='')
  print(error_analysis.markdown(result['analysis'], 'Error analysis'), end='')
  if a.output:
    print(f'wrote {a.output}/results.json, results.md, analysis.md, overlays.png')
  return 0


if __name__ == '__main__':
  sys.exit(main())
