"""PRNet's training objective: the weighted position-map loss and the L2 weight decay.

The loss is computed on positions divided by MaxPos (what the sigmoid output regresses), so its
scale does not depend on the resolution:

    loss = mean_{b, v, u, c} W(v, u) * ((pred - target)[b, v, u, c] / max_pos) ** 2

with W = weight mask x face mask (16 : 4 : 3 : 0 for landmarks : eyes/nose/mouth : face : rest,
`UVAssets.loss_weights`). The mean runs over every pixel and channel, zero-weight ones included,
as PyTorch/TF reimplementations do (`mean(square(diff) * W)`).

Weight decay is TF's `l2_regularizer(2e-4)` on every conv/transposed-conv kernel:
``2e-4 * sum(w ** 2) / 2``; BatchNorm scales and offsets are not decayed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

WEIGHT_DECAY = 2e-4


def position_map_loss(pred: jax.Array, target: jax.Array, weights: jax.Array,
                      max_pos: float, per_example: bool = False) -> jax.Array:
  """Weighted mean squared error of position maps.

  Args:
    pred, target: (B, R, R, 3) positions in pixels.
    weights: (R, R) per-pixel weights (or broadcastable to (B, R, R)).
    max_pos: MaxPos of the model (1.1 * R); positions are divided by it.
    per_example: return (B,) losses instead of their mean.

  Returns:
    float32 scalar, or (B,) if `per_example`.
  """
  if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
    raise ValueError(f'pred and target must both be (batch, R, R, 3); got {pred.shape} and '
                     f'{target.shape}')
  diff = (pred.astype(jnp.float32) - target.astype(jnp.float32)) / max_pos
  weighted = jnp.square(diff) * jnp.asarray(weights, jnp.float32)[..., None]
  per = jnp.mean(weighted, axis=(1, 2, 3))
  return per if per_example else jnp.mean(per)


def _is_kernel(path: tuple[Any, ...]) -> bool:
  last = path[-1]
  return getattr(last, 'key', getattr(last, 'name', None)) == 'kernel'


def l2_weight_decay(params: Any, coeff: float = WEIGHT_DECAY) -> jax.Array:
  """coeff * sum(w ** 2) / 2 over every leaf named 'kernel' (TF's l2_regularizer)."""
  leaves = [x for path, x in jax.tree_util.tree_leaves_with_path(params) if _is_kernel(path)]
  if not leaves:
    raise ValueError('l2_weight_decay found no kernels in params')
  total = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
  return coeff * total / 2
