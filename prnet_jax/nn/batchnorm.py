"""BatchNorm followed by its activation, with a hand-written backward pass.

PRNet applies every BatchNorm straight before a ReLU (or, once, a sigmoid). Differentiating
``flax.linen.BatchNorm`` + ``relu`` automatically keeps several full-size intermediates and
walks the activations many times; the backward pass here reads the layer's input, its output
and the incoming gradient twice (one fused reduction, one elementwise pass) and saves nothing but
per-channel statistics. The forward pass repeats flax's arithmetic operation for operation
(two-pass variance, ``(x - mean) * (rsqrt(var + eps) * scale) + bias``), so outputs and
parameter layout (``scale``, ``bias``; batch statistics ``mean``, ``var``) are flax's;
``tests/test_batchnorm.py`` checks values against ``nn.BatchNorm`` and gradients against
automatic differentiation in float64.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

from flax import linen as nn
import jax
from jax import lax
import jax.numpy as jnp

ACTIVATIONS = (None, 'relu', 'sigmoid')
_AXES = (0, 1, 2)  # NHWC: statistics over batch and space


def activate(z: jax.Array, activation: Optional[str]) -> jax.Array:
  if activation == 'relu':
    return nn.relu(z)
  if activation == 'sigmoid':
    return nn.sigmoid(z)
  return z


def _stats_dtype(x: jax.Array) -> Any:
  return jnp.promote_types(x.dtype, jnp.float32)


def _forward(x, scale, bias, epsilon, activation):
  xf = x.astype(_stats_dtype(x))
  mean = jnp.mean(xf, _AXES)
  centered = xf - mean
  var = jnp.mean(jnp.square(centered), _AXES)
  inv = lax.rsqrt(var + epsilon)
  z = centered * (inv * scale) + bias
  out = activate(z.astype(x.dtype), activation)
  return out, mean, var, inv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_act_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                         activation: Optional[str]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm + activation over NHWC ``x``.

  Args:
    x: (B, H, W, C) activations (float32, bfloat16 or float64).
    scale, bias: (C,) learned parameters (statistics dtype: float32 or float64).
    epsilon: added to the variance.
    activation: None, 'relu' or 'sigmoid'.

  Returns:
    (output like x, batch mean (C,), biased batch variance (C,)).
  """
  out, mean, var, _ = _forward(x, scale, bias, epsilon, activation)
  return out, mean, var


def _fwd(x, scale, bias, epsilon, activation):
  out, mean, var, inv = _forward(x, scale, bias, epsilon, activation)
  return (out, mean, var), (x, out, mean, inv, scale, bias)


def _bwd(epsilon, activation, res, cotangents):
  x, out, mean, inv, scale, bias = res
  d_out, d_mean, d_var = cotangents
  sdt = mean.dtype
  n = x.shape[0] * x.shape[1] * x.shape[2]
  g = d_out.astype(sdt)
  if activation == 'relu':
    g = jnp.where(out > 0, g, jnp.zeros_like(g))
  elif activation == 'sigmoid':
    o = out.astype(sdt)
    g = g * o * (1 - o)
  centered = x.astype(sdt) - mean
  xhat = centered * inv
  sum_g = jnp.sum(g, _AXES)
  sum_gx = jnp.sum(g * xhat, _AXES)
  dx = (scale * inv) * (g - sum_g / n - xhat * (sum_gx / n))
  # The statistics are outputs too (for the moving averages); their gradients, usually zero.
  dx = dx + d_mean / n + centered * (2 * d_var / n)
  return dx.astype(x.dtype), sum_gx.astype(scale.dtype), sum_g.astype(bias.dtype)


batch_norm_act_train.defvjp(_fwd, _bwd)


class BatchNormAct(nn.Module):
  """``flax.linen.BatchNorm`` (same variables and arithmetic) fused with an activation.

  Attributes:
    use_running_average: evaluation mode (moving statistics) if True.
    momentum, epsilon: as in ``nn.BatchNorm`` (TF's decay and epsilon).
    activation: None, 'relu' or 'sigmoid'.
    dtype: output dtype; statistics are computed in at least float32.
  """
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  activation: Optional[str] = 'relu'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation must be one of {ACTIVATIONS}, got {self.activation!r}')
    c = x.shape[-1]
    # float32 statistics (float64 for a float64 model); each update keeps their dtype, so a
    # train step's output state has its input's types (no recompilation at the second step).
    stats_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), stats_dtype))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), stats_dtype))
    scale = self.param('scale', nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    x = x.astype(self.dtype)
    sdt = _stats_dtype(x)
    scale, bias = scale.astype(sdt), bias.astype(sdt)
    if self.use_running_average:
      xf = x.astype(sdt)
      mul = lax.rsqrt(ra_var.value.astype(sdt) + self.epsilon) * scale
      z = (xf - ra_mean.value.astype(sdt)) * mul + bias
      return activate(z.astype(self.dtype), self.activation)
    out, mean, var = batch_norm_act_train(x, scale, bias, self.epsilon, self.activation)
    if not self.is_initializing():
      m = self.momentum
      ra_mean.value = (m * ra_mean.value + (1 - m) * lax.stop_gradient(mean)).astype(stats_dtype)
      ra_var.value = (m * ra_var.value + (1 - m) * lax.stop_gradient(var)).astype(stats_dtype)
    return out
