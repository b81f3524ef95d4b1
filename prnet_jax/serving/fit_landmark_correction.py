r"""Fits the landmark correction (`prnet_jax.serving.landmark_correction`) of a model on a folder
of real faces with ground truth (AFLW2000-3D format: image + `.mat` with `pt3d_68`).

    python -m prnet_jax.serving.fit_landmark_correction --input=DIR --output=FILE.npz [--checkpoint=pretrained]

Runs the model over every file (the official landmark crop times each of `--crop_scales`, the
checkpoint's test-time passes, no correction), fits a correction for each framing with the
ridge strength chosen by k-fold cross-validation, keeps the framing whose corrected landmarks
score best cross-validated, prints the table by |yaw| and writes the correction (with its
crop scale and the model's fingerprint). One pass over the folder per crop scale.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from prnet_jax.data import readers
from prnet_jax.serving import folder_eval
from prnet_jax.serving.landmark_correction import fit, markdown, model_fingerprint


def predictions_on_folder(predictor, folder: str):
  """(pred (N, 68, 3), gt (N, 68, 3), angles (N, 3), names) of `predictor` (uncorrected) on
  the AFLW2000-3D-format files of `folder`, with the official landmark crop."""
  saved, predictor.landmark_correction = predictor.landmark_correction, None
  try:
    pairs = readers.find_pairs(folder)
    if not pairs:
      raise FileNotFoundError(f'{folder}: no image + .mat pairs (AFLW2000-3D format) found')
    pred, gt, angles, names = [], [], [], []
    for k, (image_path, mat_path) in enumerate(pairs):
      try:
        image, truth, angle = folder_eval._load(image_path, mat_path)  # pylint: disable=protected-access
      except readers.SampleError as e:
        print(f'skipped {e}', flush=True)
        continue
      pred.append(predictor.predict(image, landmarks=truth[:, :2])[0].landmarks)
      gt.append(truth)
      angles.append(angle)
      names.append(os.path.splitext(os.path.basename(mat_path))[0])
      if (k + 1) % 100 == 0 or k + 1 == len(pairs):
        print(f'[{k + 1}/{len(pairs)}] predicted', flush=True)
  finally:
    predictor.landmark_correction = saved
  if not pred:
    raise ValueError(f'{folder}: no readable samples')
  return np.stack(pred), np.stack(gt), np.stack(angles), names


def main(argv: Optional[Sequence[str]] = None) -> int:
  from prnet_jax.nn import checkpoints
  from prnet_jax.serving.inference import PredictError, Predictor
  p = argparse.ArgumentParser(description='Fit the landmark correction of a model.')
  p.add_argument('--checkpoint', default=checkpoints.PRETRAINED)
  p.add_argument('--input', required=True, help='folder of AFLW2000-3D-format image + .mat pairs')
  p.add_argument('--output', required=True, help='the correction file (.npz) to write')
  p.add_argument('--folds', type=int, default=10)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--about', default='', help='what it was fitted on, recorded in the file')
  p.add_argument('--crop_scales', default='1.0',
                 help='comma-separated crop sides to try, times the official landmark crop\'s')
  a = p.parse_args(argv)
  try:
    scales = [float(x) for x in a.crop_scales.split(',') if x.strip()]
    if not scales or not all(0.5 <= x <= 2.0 for x in scales):
      raise ValueError(f'--crop_scales={a.crop_scales}: numbers in [0.5, 2] expected')
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  try:
    variables, _, _ = checkpoints.load_variables(a.checkpoint)
    predictor = Predictor.from_checkpoint(a.checkpoint)
    fits, official = [], None
    for scale in scales:
      predictor.crop_scale = scale
      print(f'crop scale {scale}:', flush=True)
      pred, gt, angles, _ = predictions_on_folder(predictor, a.input)
      fits.append(fit(pred, gt, model_fingerprint(variables), a.folds, a.seed, angles=angles,
                      about=a.about or os.path.abspath(a.input), crop_scale=scale))
      if scale == 1.0:
        official = fits[-1].info
    correction = min(fits, key=lambda c: c.info['nme_cross_validated'])
    correction.info['cv_nme_by_crop_scale'] = {str(c.crop_scale): c.info['nme_cross_validated']
                                               for c in fits}
    if official is not None:
      correction.info['nme_official'] = official['nme_before']
      if 'nme_before_by_yaw' in official:
        correction.info['nme_official_by_yaw'] = official['nme_before_by_yaw']
  except (checkpoints.CheckpointError, PredictError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  try:
    correction.save(a.output)
  except OSError as e:
    print(f'error: cannot write {a.output}: {e.strerror or e}', file=sys.stderr)
    return 1
  print(markdown(correction.info), end='')
  print(f'wrote {a.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
