"""Alignment metrics of the paper's protocols (jit-friendly, batched, float32).

Sparse (AFLW2000-3D, 68 landmarks) and dense (every face pixel of the UV map) NME: the mean
point-to-point L2 error divided by a normaliser of the ground truth. Each variant is named by
the peer code it reproduces:

  norm 'box' (default):  sqrt(w * h) of the ground-truth 68 landmarks' 2D bounding box. In 2D
                         this is the paper's protocol as 3DDFA's, SynergyNet's and 2DASL's
                         evaluation code computes it (their numbers are reproduced exactly).
                         The paper does not publish its 3D or dense normaliser; with this one,
                         3D (and dense) NME equals the PyTorch PRNet port's.
  norm 'diag':           the diagonal of that box (some re-implementations use it for 3D).
  norm 'face_box':       dense NME only: sqrt(w * h) of the 2D bounding box of all ground-truth
                         face pixels, the PyTorch port's dense normaliser.

For 3D the depth origin of a prediction is arbitrary (PRNet's maps put the minimum z at 0, other
methods centre it), so both z values are aligned first by `z_align`:

  'mean' (default): subtract each point set's mean z (the offset minimising the error; the
                    PyTorch port's 3D NME);
  'min':            shift each set so its minimum z is 0 (how 2DASL scored PRNet);
  'none':           compare z as given.

Only the 2D numbers with norm 'box' are comparable with the paper's; reports mark the others.
Results by |yaw| bucket [0, 30], (30, 60], (60, 90] degrees and their mean (the paper's
headline), cumulative error distributions (CED) and their normalised area (AUC).
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax.data.readers import yaw_bucket  # noqa: F401  (the protocol's buckets, one definition)

NORMALIZERS = ('box', 'diag')
DENSE_NORMALIZERS = NORMALIZERS + ('face_box',)
Z_ALIGNS = ('mean', 'min', 'none')
BUCKET_NAMES = ('[0, 30]', '(30, 60]', '(60, 90]')


def bbox_size(gt: jax.Array) -> jax.Array:
  """(..., N, 2+) ground-truth points -> (...,) sqrt(w * h) of their 2D bounding box."""
  span = gt[..., :2].max(-2) - gt[..., :2].min(-2)
  return jnp.sqrt(span[..., 0] * span[..., 1])


def normalizer(gt_landmarks: jax.Array, kind: str = 'box') -> jax.Array:
  """(..., 68, 2+) ground-truth landmarks -> (...,) the NME denominator named by `kind`."""
  if kind == 'box':
    return bbox_size(gt_landmarks)
  if kind == 'diag':
    span = gt_landmarks[..., :2].max(-2) - gt_landmarks[..., :2].min(-2)
    return jnp.linalg.norm(span, axis=-1)
  raise ValueError(f'unknown NME normaliser {kind!r}; choose one of {NORMALIZERS}')


def align_z(points: jax.Array, how: str = 'mean', mask: Optional[jax.Array] = None
            ) -> jax.Array:
  """(..., N, 3) -> the same with z shifted per point set as `how` says (over `mask`'s points
  when given, (..., N) in {0, 1})."""
  if how == 'none':
    return points
  points = jnp.asarray(points)
  z = points[..., 2]
  m = jnp.ones_like(z) if mask is None else mask.astype(z.dtype)
  if how == 'mean':
    offset = (z * m).sum(-1) / jnp.maximum(m.sum(-1), 1)
  elif how == 'min':
    offset = jnp.where(m > 0, z, jnp.inf).min(-1)
  else:
    raise ValueError(f'unknown z alignment {how!r}; choose one of {Z_ALIGNS}')
  return points.at[..., 2].add(-offset[..., None])


def _check_dims(dims: int) -> None:
  if dims not in (2, 3):
    raise ValueError(f'dims must be 2 or 3, got {dims}')


def nme(pred: jax.Array, gt: jax.Array, dims: int = 2, norm: str = 'box',
        z_align: str = 'mean') -> jax.Array:
  """Landmark NME. (..., N, >=dims) points -> (...,) mean L2 error / normaliser of gt."""
  _check_dims(dims)
  if dims == 3:
    pred, gt = align_z(pred[..., :3], z_align), align_z(gt[..., :3], z_align)
  err = jnp.linalg.norm(pred[..., :dims] - gt[..., :dims], axis=-1).mean(-1)
  return err / normalizer(gt, norm)


def dense_nme(pred_map: jax.Array, gt_map: jax.Array, face_mask: jax.Array,
              gt_landmarks: jax.Array, dims: int = 2, norm: str = 'box',
              z_align: str = 'mean') -> jax.Array:
  """Dense NME over the face pixels of position maps.

  Args:
    pred_map, gt_map: (..., R, R, 3) position maps (x, y pixels, z depth).
    face_mask: (R, R) in {0, 1}: the pixels that are face vertices.
    gt_landmarks: (..., 68, 2+) ground-truth landmarks (for the landmark normalisers).
    norm: one of DENSE_NORMALIZERS ('face_box': the box of the ground-truth face pixels).
  Returns:
    (...,) mean L2 error over face pixels / normaliser.
  """
  _check_dims(dims)
  if norm not in DENSE_NORMALIZERS:
    raise ValueError(f'unknown dense NME normaliser {norm!r}; choose one of {DENSE_NORMALIZERS}')
  lead = pred_map.shape[:-3]
  p = pred_map.reshape(lead + (-1, 3))
  g = gt_map.reshape(lead + (-1, 3))
  m = jnp.broadcast_to(jnp.asarray(face_mask).reshape(-1) > 0, p.shape[:-1])
  if norm == 'face_box':
    lo = jnp.where(m[..., None], g[..., :2], jnp.inf).min(-2)
    hi = jnp.where(m[..., None], g[..., :2], -jnp.inf).max(-2)
    span = hi - lo
    denominator = jnp.sqrt(span[..., 0] * span[..., 1])
  else:
    denominator = normalizer(gt_landmarks, norm)
  if dims == 3:
    p, g = align_z(p, z_align, m), align_z(g, z_align, m)
  err = jnp.linalg.norm(p[..., :dims] - g[..., :dims], axis=-1)
  err = (err * m).sum(-1) / jnp.maximum(m.sum(-1), 1)
  return err / denominator


# ---------------------------------------------------------------------- summaries (host side)

def bucket_summary(errors: np.ndarray, buckets: np.ndarray) -> dict[str, float]:
  """Per-bucket means, their mean (NaN when a bucket is empty), the all-image mean, counts."""
  errors, buckets = np.asarray(errors, np.float64), np.asarray(buckets)
  out: dict[str, float] = {}
  means = []
  for b, name in enumerate(BUCKET_NAMES):
    sel = errors[buckets == b]
    means.append(float(sel.mean()) if len(sel) else float('nan'))
    out[f'bucket{b}'] = means[-1]
    out[f'bucket{b}_count'] = int(len(sel))
  out['bucket_mean'] = float(np.mean(means))
  out['all'] = float(errors.mean()) if len(errors) else float('nan')
  out['count'] = int(len(errors))
  return out


def ced(errors: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
  """Cumulative error distribution: the fraction of errors <= each threshold."""
  e = np.sort(np.asarray(errors, np.float64))
  return np.searchsorted(e, np.asarray(thresholds, np.float64), side='right') / max(len(e), 1)


def auc(errors: np.ndarray, threshold: float) -> float:
  """Area under the CED from 0 to `threshold`, divided by `threshold` (1 = all errors 0).

  Exact: the CED is a step function, and its integral up to T is mean(max(T - e_i, 0))."""
  e = np.asarray(errors, np.float64)
  if not len(e):
    return float('nan')
  return float(np.maximum(threshold - e, 0).mean() / threshold)
