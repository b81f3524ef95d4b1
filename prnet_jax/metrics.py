"""Alignment metrics (jit-friendly, batched).

NME (normalised mean error) of 68 landmarks, the AFLW2000-3D protocol: mean point-to-point
distance divided by sqrt(w * h) of the ground-truth landmarks' 2D bounding box.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bbox_size(gt: jax.Array) -> jax.Array:
  """(..., N, 2+) ground-truth points -> (...,) sqrt(w * h) of their 2D bounding box."""
  span = gt[..., :2].max(-2) - gt[..., :2].min(-2)
  return jnp.sqrt(span[..., 0] * span[..., 1])


def nme(pred: jax.Array, gt: jax.Array, dims: int = 2) -> jax.Array:
  """(..., N, >=dims) points -> (...,) mean L2 error over N points / sqrt(w * h) of gt's box."""
  err = jnp.linalg.norm(pred[..., :dims] - gt[..., :dims], axis=-1).mean(-1)
  return err / bbox_size(gt)
