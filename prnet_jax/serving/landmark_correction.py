r"""A linear correction of a model's 68 landmarks, fitted on real faces with ground truth.

Fitted by `python -m prnet_jax.serving.fit_landmark_correction --input=DIR --output=FILE.npz`.

A model trained only on a synthetic world places some landmarks systematically off on real
photos (its world's jaw, brows and eyes are not the photos'). The correction maps the predicted
landmarks to an offset per landmark, linearly, in the predicted landmarks' own frame (centre and
size of their 2D box), so it does not depend on where the face is or how large:

    features  x = [(xy - c) / s  (136),  (z - mean z) / s  (68),  1]
    offset    (xy_true - xy) / s = x @ W        (W: (205, 136), ridge-regularised; z unchanged)

`fit` chooses the ridge strength by k-fold cross-validation and reports the cross-validated NME
(each face corrected by a W fitted without it), the honest number for faces it was not fitted
on. The fitting command runs the model over a folder of AFLW2000-3D-format files, fits, prints
the table and writes the correction with the model's fingerprint: `Predictor` applies a
correction only to the model it was fitted for.

The bundled model ships with one fitted on the AFLW2000-3D development half (research-only
labels; see the README).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np

FEATURES = 68 * 2 + 68 + 1
# The bundled model's, fitted on the AFLW2000-3D development half.
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'assets',
                       'landmark_correction_aflw2000_dev.npz')
LAMBDAS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)  # few faces need the strong end


def model_fingerprint(variables: Any) -> str:
  """sha256 (hex, 16 digits) of the variables' float32 values in path order."""
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(variables)[0],
                           key=lambda kv: jax.tree_util.keystr(kv[0])):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return h.hexdigest()[:16]


def _frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Centre (N, 2) and size (N,) = sqrt(w * h) of each face's 2D landmark box."""
  xy = landmarks[..., :2]
  lo, hi = xy.min(-2), xy.max(-2)
  return (lo + hi) / 2, np.sqrt(np.maximum(np.prod(hi - lo, -1), 1e-12))


def features(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(N, 68, 3) landmarks -> (N, FEATURES) features, centres (N, 2), sizes (N,)."""
  p = np.asarray(landmarks, np.float64)
  if p.ndim != 3 or p.shape[1:] != (68, 3):
    raise ValueError(f'landmarks must be (N, 68, 3), got {p.shape}')
  c, s = _frame(p)
  xy = (p[..., :2] - c[:, None]) / s[:, None, None]
  z = (p[..., 2] - p[..., 2].mean(-1, keepdims=True)) / s[:, None]
  return np.concatenate([xy.reshape(len(p), -1), z, np.ones((len(p), 1))], 1), c, s


def solve(pred: np.ndarray, gt: np.ndarray, lam: float) -> np.ndarray:
  """W (FEATURES, 136) minimising |x W - target|^2 + lam |W without the bias row|^2."""
  x, _, s = features(pred)
  target = ((np.asarray(gt, np.float64)[..., :2] - np.asarray(pred, np.float64)[..., :2])
            / s[:, None, None]).reshape(len(x), -1)
  reg = lam * np.eye(FEATURES)
  reg[-1, -1] = 0.0
  return np.linalg.solve(x.T @ x + reg, x.T @ target)


def correct(weights: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
  """Landmarks (N, 68, 3) or (68, 3) with x, y moved by the correction; z as given."""
  p = np.asarray(landmarks)
  single = p.ndim == 2
  batch = p[None] if single else p
  x, _, s = features(batch)
  out = np.array(batch, np.float64)
  out[..., :2] += (x @ weights).reshape(len(batch), 68, 2) * s[:, None, None]
  out = out.astype(p.dtype if np.issubdtype(p.dtype, np.floating) else np.float64)
  return out[0] if single else out


def nme_2d(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """(N,) 2D NME with the box normaliser sqrt(w * h) of the ground truth (the protocol's)."""
  _, norm = _frame(np.asarray(gt, np.float64))
  err = np.linalg.norm(np.asarray(pred, np.float64)[..., :2] - np.asarray(gt, np.float64)[..., :2],
                       axis=-1)
  return err.mean(-1) / norm


def cross_validated(pred: np.ndarray, gt: np.ndarray, lam: float, folds: int = 10,
                    seed: int = 0) -> np.ndarray:
  """(N, 68, 3): each face corrected by the W fitted on the other folds (seeded split)."""
  assignment = np.random.default_rng(seed).permutation(len(pred)) % folds
  out = np.empty(np.shape(pred), np.float64)
  for k in range(folds):
    held = assignment == k
    out[held] = correct(solve(pred[~held], gt[~held], lam), pred[held])
  return out


@dataclasses.dataclass
class LandmarkCorrection:
  """A fitted correction: `weights` (FEATURES, 136) for the model with `fingerprint`, on
  landmarks predicted from crops `crop_scale` x the official side (`Predictor.crop_scale`)."""
  weights: np.ndarray
  fingerprint: str
  info: dict
  crop_scale: float = 1.0

  def __call__(self, landmarks: np.ndarray) -> np.ndarray:
    return correct(self.weights, landmarks)

  def save(self, path: str) -> None:
    tmp = f'{path}.tmp-{os.getpid()}.npz'
    try:
      np.savez(tmp, weights=self.weights.astype(np.float32), fingerprint=self.fingerprint,
               info=json.dumps(self.info), crop_scale=np.float64(self.crop_scale))
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)

  @classmethod
  def load(cls, path: str) -> 'LandmarkCorrection':
    try:
      with np.load(path) as d:
        weights, fingerprint, info = d['weights'], str(d['fingerprint']), json.loads(str(d['info']))
        crop_scale = float(d['crop_scale']) if 'crop_scale' in d.files else 1.0
    except (OSError, KeyError, ValueError) as e:
      raise ValueError(f'{path}: not a landmark correction file ({e})') from None
    if weights.shape != (FEATURES, 136):
      raise ValueError(f'{path}: weights are {weights.shape}, expected {(FEATURES, 136)}')
    if not 0.5 <= crop_scale <= 2.0:
      raise ValueError(f'{path}: crop_scale {crop_scale} outside [0.5, 2]')
    return cls(weights.astype(np.float64), fingerprint, info, crop_scale)


def fit(pred: np.ndarray, gt: np.ndarray, fingerprint: str, folds: int = 10, seed: int = 0,
        lambdas: Sequence[float] = LAMBDAS, angles: Optional[np.ndarray] = None,
        about: str = '', crop_scale: float = 1.0) -> LandmarkCorrection:
  """The ridge strength with the lowest k-fold cross-validated NME, then W on every face.
  `info` holds the cross-validated NME per strength, before and after (per |yaw| bucket when
  `angles` (N, 3) pitch, yaw, roll in degrees are given)."""
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  if len(pred) < 2 * folds:
    raise ValueError(f'{len(pred)} faces are too few to fit and cross-validate ({folds} folds)')
  scores = {lam: float(nme_2d(cross_validated(pred, gt, lam, folds, seed), gt).mean())
            for lam in lambdas}
  lam = min(scores, key=scores.get)
  cv = nme_2d(cross_validated(pred, gt, lam, folds, seed), gt)
  before = nme_2d(pred, gt)
  info = {'faces': len(pred), 'folds': folds, 'seed': seed, 'lambda': lam,
          'crop_scale': crop_scale,
          'cv_nme_by_lambda': {str(k): v for k, v in scores.items()},
          'nme_before': float(before.mean()), 'nme_cross_validated': float(cv.mean()),
          'about': about}
  if angles is not None:  # the error analysis's |yaw| buckets (its rule for missing angles too)
    from prnet_jax.evaluation import error_analysis
    edges = error_analysis.EDGES['yaw']
    bucket = error_analysis.angle_bucket(np.asarray(angles, np.float64)[:, 1], edges)
    masks = [bucket == b for b in range(len(edges) + 1)]
    info['yaw_buckets'] = [error_analysis.bucket_label(edges, b) for b in range(len(edges) + 1)]
    info['nme_before_by_yaw'] = [float(before[m].mean()) for m in masks]
    info['nme_cross_validated_by_yaw'] = [float(cv[m].mean()) for m in masks]
  return LandmarkCorrection(solve(pred, gt, lam), fingerprint, info, crop_scale)


def markdown(info: dict) -> str:
  """The fit's table: 2D NME by |yaw| bucket (when fitted with angles) and mean."""
  buckets = info.get('yaw_buckets', [])
  lines = [f"Landmark correction: {info['faces']} faces, {info['folds']}-fold cross-validation, "
           f"ridge {info['lambda']}, crops {info.get('crop_scale', 1.0)} x the official side",
           '', '| 2D NME | ' + ''.join(f'{b} | ' for b in buckets) + 'mean |',
           '|---|' + '---|' * (len(buckets) + 1)]
  for label, key in (('official crops, no correction', 'nme_official'),
                     (f"crops x {info.get('crop_scale', 1.0)}, no correction", 'nme_before'),
                     ('... with the correction (cross-validated)', 'nme_cross_validated')):
    if key in info:
      cells = [f'{100 * v:.2f}%' for v in info.get(f'{key}_by_yaw', [])]
      lines.append(f'| {label} | ' + ' | '.join(cells + [f'**{100 * info[key]:.2f}%**']) + ' |')
  return '\n'.join(lines) + '\n'
