r"""Fits the landmark correction (`prnet_jax.serving.landmark_correction`) of a model on a folder
of real faces with ground truth (AFLW2000-3D format: image + `.mat` with `pt3d_68`).

    python -m prnet_jax.serving.fit_landmark_correction --input=DIR --output=FILE.npz [--checkpoint=pretrained]

Runs the model over every file (the official landmark crop, the checkpoint's test-time passes,
no correction), chooses the ridge strength by k-fold cross-validation, prints the
cross-validated table by |yaw| and writes the correction with the model's fingerprint.
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
  a = p.parse_args(argv)
  try:
    variables, _, _ = checkpoints.load_variables(a.checkpoint)
    predictor = Predictor.from_checkpoint(a.checkpoint)
    pred, gt, angles, _ = predictions_on_folder(predictor, a.input)
    correction = fit(pred, gt, model_fingerprint(variables), a.folds, a.seed,
                     angles=angles, about=a.about or os.path.abspath(a.input))
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
