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
from prnet_jax.evaluation import metrics
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


def _load(image_path: str, mat_path: str) -> tuple[np.ndarray, np.ndarray]:
  mat = readers.load_mat(mat_path, {'pt3d_68': (3, 68)})
  return image_io.load_sample_image(image_path), np.asarray(mat['pt3d_68'], np.float64).T


def evaluate_folder(predictor, folder: str, output: Optional[str] = None,
                    seed: int = 0) -> dict:
  """Scores every image + .mat pair of `folder`; returns {'files': [...], 'mean': {...},
  'skipped': [...]}, and writes the results and pictures under `output` when given."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'{folder}: not a folder')
  pairs = readers.find_pairs(folder)
  if not pairs:
    raise FileNotFoundError(f'{folder}: no image + .mat pairs (AFLW2000-3D format) found')
  baseline = untrained_predictor(predictor, seed)
  mean_shape = mean_shape_landmarks(predictor.assets)
  rows, skipped, pictures = [], [], []
  for image_path, mat_path in pairs:
    name = os.path.splitext(os.path.basename(mat_path))[0]
    try:
      image, gt = _load(image_path, mat_path)
    except readers.SampleError as e:
      print(f'skipped {e}', flush=True)
      skipped.append({'file': name, 'reason': str(e)})
      continue
    face = predictor.predict(image, landmarks=gt[:, :2])[0]
    untrained = baseline.predict(image, landmarks=gt[:, :2])[0]
    preds = {'model': face.landmarks, 'untrained': untrained.landmarks,
             'mean_shape': place_in_box(mean_shape, gt)}
    row = {'file': name}
    for method, p in preds.items():
      row[f'{method}_2d'], row[f'{method}_3d'] = score(np.asarray(p, np.float64), gt)
    rows.append(row)
    print(f"{name}: 2D NME {100 * row['model_2d']:.2f}%  3D {100 * row['model_3d']:.2f}%  "
          f"(untrained {100 * row['untrained_2d']:.2f}%, mean shape "
          f"{100 * row['mean_shape_2d']:.2f}%)", flush=True)
    if output:
      pictures.append((name, _overlay(image, face, gt)))
  if not rows:
    raise ValueError(f'{folder}: no readable samples ({len(skipped)} skipped)')
  keys = [f'{m}_{d}' for m in METHODS for d in ('2d', '3d')]
  result = {'folder': os.path.abspath(folder), 'files': rows, 'skipped': skipped,
            'mean': {k: float(np.mean([r[k] for r in rows])) for k in keys}}
  if output:
    _write(result, pictures, output)
  return result


def _overlay(image: np.ndarray, face, gt: np.ndarray):
  from PIL import ImageDraw

  from prnet_jax.serving import outputs
  im = outputs.overlay(image, [face])
  d = ImageDraw.Draw(im)
  r = max(1.5, 1.5 * max(image.shape[:2]) / 400)
  for x, y in gt[:, :2]:
    d.ellipse([x - r, y - r, x + r, y + r], outline=(40, 255, 40))
  return im


def markdown(result: dict) -> str:
  head = ('| file | 2D NME | 3D NME | untrained 2D | untrained 3D | mean shape 2D | '
          'mean shape 3D |\n|---|---|---|---|---|---|---|\n')
  keys = [f'{m}_{d}' for m in METHODS for d in ('2d', '3d')]
  line = lambda name, r: f'| {name} | ' + ' | '.join(f'{100 * r[k]:.2f}%' for k in keys) + ' |\n'
  body = ''.join(line(r['file'], r) for r in result['files'])
  return head + body + line(f"**mean of {len(result['files'])}**", result['mean'])


def _write(result: dict, pictures, output: str) -> None:
  from PIL import Image
  os.makedirs(os.path.join(output, 'overlays'), exist_ok=True)
  with open(os.path.join(output, 'results.json'), 'w') as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(output, 'results.md'), 'w') as f:
    f.write(markdown(result))
  tiles = []
  for name, im in pictures:
    im.save(os.path.join(output, 'overlays', f'{name}.png'))
    tiles.append(im.resize((256, round(256 * im.height / im.width))))
  sheet = Image.new('RGB', (256 * len(tiles), max(t.height for t in tiles)))
  for i, t in enumerate(tiles):
    sheet.paste(t, (256 * i, 0))
  sheet.save(os.path.join(output, 'overlays.png'))


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description='Landmark NME on a folder of AFLW2000-3D-format files.')
  p.add_argument('--checkpoint', default='pretrained',
                 help="checkpoint directory, a run's workdir, or 'pretrained' (the default)")
  p.add_argument('--input', required=True, help='folder of image + .mat pairs')
  p.add_argument('--output', default=None, help='folder for results.json/.md and overlays')
  p.add_argument('--uv_assets', default=None, help="default: the checkpoint's own")
  p.add_argument('--seed', type=int, default=0, help="the untrained baseline's initialisation")
  a = p.parse_args(argv)
  from prnet_jax.serving.inference import PredictError, Predictor
  try:
    predictor = Predictor.from_checkpoint(a.checkpoint, a.uv_assets)
    result = evaluate_folder(predictor, a.input, a.output, a.seed)
  except (PredictError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(markdown(result), end='')
  if a.output:
    print(f'wrote {a.output}/results.json, results.md, overlays.png')
  return 0


if __name__ == '__main__':
  sys.exit(main())
