"""PRNet's convolutions as pure functions, in two implementations that compute the same thing.

PRNet needs 4x4 convolutions with TF 'SAME' padding at strides 1 and 2, 1x1 convolutions at
strides 1 and 2, and 4x4 transposed convolutions at strides 1 and 2 (kernels stored as TF
stores them, ``[kh, kw, out, in]``). Activations are NHWC, conv kernels HWIO.

* ``impl='reference'``: ``lax.conv_general_dilated`` / ``lax.conv_transpose`` exactly as
  ``flax.linen.Conv`` / ``ConvTranspose`` call them (the straightforward port).
* ``impl='fast'`` (default): the same functions written so that neither they nor their
  gradients need dilated or strided convolutions, which XLA's CPU backend runs on a slow generic
  loop instead of its Eigen/oneDNN convolution kernels (a strided conv's input gradient is an
  input-dilated conv; a stride-2 transposed conv *is* one):
  - stride-2 4x4 conv = pad 1/1, space-to-depth (2x2 blocks into channels), 2x2 VALID conv
    with the kernel regrouped the same way;
  - stride-2 1x1 conv = every second pixel, then a matrix product;
  - 1x1 stride-1 conv = a matrix product over channels;
  - stride-2 4x4 transposed conv = pad 1/1, one 2x2 VALID conv producing the four output phases
    (sub-pixel convolution, 4x the output channels), then depth-to-space;
  - stride-1 4x4 transposed conv = a 4x4 conv with the flipped kernel, padded 2/1.
  Every convolution left is stride 1 (``conv_stride1``); on CPU in float32, where measured
  faster, native kernels (``prnet_jax.native``) compute its kernel gradient (2-4x XLA's on the
  shallow layers) and the forward pass of few-channel layers (1.5-7x).
  ``tests/test_conv_ops.py`` checks values and gradients against the reference in float64.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Sequence

import jax
from jax import lax
import jax.numpy as jnp

from prnet_jax import native

IMPLS = ('fast', 'reference')
_DN = ('NHWC', 'HWIO', 'NHWC')
# Native CPU kernels (prnet_jax.native) for the fast path's convolutions where they apply
# (measured: full-model train step and inference, see BENCHMARKS.md).
NATIVE_KERNELS = True


@contextlib.contextmanager
def native_kernels(enabled: bool):
  """Within the block, functions traced use (or not) the native CPU kernels; e.g. off for a
  ``jax.export`` artifact that must run where prnet_jax's kernels are not registered."""
  global NATIVE_KERNELS
  before, NATIVE_KERNELS = NATIVE_KERNELS, enabled
  try:
    yield
  finally:
    NATIVE_KERNELS = before


def _check(impl: str, x: jax.Array, kernel: jax.Array, stride: int) -> None:
  if impl not in IMPLS:
    raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
  if stride not in (1, 2):
    raise ValueError(f'stride must be 1 or 2, got {stride}')
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f'expected NHWC activations and a 4-d kernel, got shapes {x.shape} and '
                     f'{kernel.shape}')


def conv_same(x: jax.Array, kernel: jax.Array, stride: int = 1, impl: str = 'fast',
              precision: Any = None) -> jax.Array:
  """TF-'SAME' convolution, no bias: x (B, H, W, Cin), kernel (k, k, Cin, Cout) -> (B, H/s, W/s, Cout).

  Strided convolutions need even H and W (every PRNet stage has them).
  """
  _check(impl, x, kernel, stride)
  k = kernel.shape[0]
  if impl == 'reference':
    return lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME', dimension_numbers=_DN,
                                    precision=precision)
  if k == 1:
    if stride == 2:
      x = x[:, ::2, ::2, :]
    return jnp.einsum('bhwc,cd->bhwd', x, kernel[0, 0], precision=precision)
  if stride == 1:
    pads = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], (1, 1), 'SAME')
    return conv_stride1(x, kernel, pads, precision)
  # Stride-2 4x4 convs as space-to-depth + 2x2 conv: the plain strided conv's kernel gradient
  # needs a 2x-dilated copy of the output gradient (measured: train step 4.1 s -> 3.0 s).
  if k != 4:
    raise ValueError(f'the fast stride-2 convolution is written for 4x4 kernels, got {k}x{k}')
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f'stride-2 convolution needs even height and width, got {h}x{w}')
  # TF SAME for k=4, s=2 on even sizes pads 1 before and 1 after.
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  s2d = _space_to_depth(xp)                             # (B, H/2+1, W/2+1, 4C) as (b1, b2, c)
  # kernel[2a1+b1, 2a2+b2, c, o] -> k2[a1, a2, (b1, b2, c), o]
  cout = kernel.shape[-1]
  k2 = kernel.reshape(2, 2, 2, 2, c, cout).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, cout)
  return conv_stride1(s2d, k2, ((0, 0), (0, 0)), precision)


def conv_transpose_same(x: jax.Array, kernel: jax.Array, stride: int = 1, impl: str = 'fast',
                        precision: Any = None) -> jax.Array:
  """TF-'SAME' transposed convolution (the gradient of a conv), no bias.

  x (B, H, W, Cin), kernel (k, k, Cout, Cin) as TF and ``flax.linen.ConvTranspose(
  transpose_kernel=True)`` store it -> (B, H*s, W*s, Cout).
  """
  _check(impl, x, kernel, stride)
  if impl == 'reference':
    return lax.conv_transpose(x, kernel, (stride, stride), 'SAME', dimension_numbers=_DN,
                              transpose_kernel=True, precision=precision)
  return conv_transpose_prepared(x, prepare_transpose_kernel(kernel, stride), stride,
                                 precision)


def prepare_transpose_kernel(kernel: jax.Array, stride: int) -> jax.Array:
  """The forward-conv kernel that ``conv_transpose_prepared`` uses for a TF transposed-conv
  kernel (k, k, Cout, Cin): stride 1 -> (4, 4, Cin, Cout) flipped; stride 2 -> (2, 2, Cin,
  4 Cout), the four output phases side by side. Inference prepares it once
  (``model.prepare_for_inference``) instead of on every call."""
  if kernel.ndim != 4 or kernel.shape[0] != 4 or kernel.shape[1] != 4:
    raise ValueError(f'the fast transposed convolution is written for 4x4 kernels, got '
                     f'shape {kernel.shape}')
  if stride not in (1, 2):
    raise ValueError(f'stride must be 1 or 2, got {stride}')
  # The equivalent forward-conv kernel: flipped in space, in/out swapped -> (k, k, Cin, Cout).
  we = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
  if stride == 1:
    return we
  cin, cout = we.shape[2], we.shape[3]
  # k2[t1, t2, c, (p1, p2, o)] = we[2 t1 + p1, 2 t2 + p2, c, o]
  return we.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 4, 1, 3, 5).reshape(
      2, 2, cin, 4 * cout)


def conv_transpose_prepared(x: jax.Array, prepared: jax.Array, stride: int,
                            precision: Any = None) -> jax.Array:
  """``conv_transpose_same(x, kernel, stride)`` given ``prepare_transpose_kernel(kernel)``."""
  if stride == 1:
    # lax.conv_transpose's SAME padding for k=4, s=1 is 2 before, 1 after.
    return conv_stride1(x, prepared, ((2, 1), (2, 1)), precision)
  # Stride 2: out[2m + p] = x[m - 1 + p] we[p] + x[m + p] we[2 + p] (p = output phase), i.e. a
  # 2-tap window of the 1-padded input at offset m + p with taps we[p], we[2 + p].
  b, h, w, _ = x.shape
  cout = prepared.shape[-1] // 4
  y = conv_stride1(x, prepared, ((1, 1), (1, 1)), precision,
                   explicit_pad=True)                    # (B, H+1, W+1, 4 Cout)
  y = y.reshape(b, h + 1, w + 1, 2, 2, cout)
  rows = []
  for p1 in (0, 1):
    rows.append(jnp.stack([y[:, p1:p1 + h, p2:p2 + w, p1, p2] for p2 in (0, 1)], axis=3))
  out = jnp.stack(rows, axis=2)                          # (B, H, 2, W, 2, Cout)
  return _merge_keeping_batch_sharding(out, (b, 2 * h, 2 * w, cout))


def conv_stride1(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]],
                 precision: Any = None, explicit_pad: bool = False) -> jax.Array:
  """Stride-1 convolution with explicit (before, after) padding of H and W.

  On CPU in float32, parts of it run as native kernels where ``prnet_jax.native`` measured them
  faster (the kernel gradient of shallow layers; the forward pass of few-channel layers): the
  same function, different round-off. ``explicit_pad``: where XLA computes it, pad with
  ``jnp.pad`` and run a VALID convolution (XLA:CPU's kernel gradient of the 1-padded 2x2
  convolution of the stride-2 transposed convs runs on a slow path: 2.5 s instead of 0.06 s at
  128 px)."""
  padding = tuple((int(a), int(b)) for a, b in padding)
  if NATIVE_KERNELS:
    forward_kind = native.forward_kind(x, kernel.shape)
    (pt, pb), (pl, pr) = padding
    out_pixels = (x.shape[0] * (x.shape[1] + pt + pb - kernel.shape[0] + 1)
                  * (x.shape[2] + pl + pr - kernel.shape[1] + 1))
    native_grad = native.use_for(x, kernel.shape, out_pixels)
    if forward_kind or native_grad:
      return _conv_native(x, kernel, padding, precision, forward_kind, native_grad)
  if explicit_pad:
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    padding = ((0, 0), (0, 0))
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DN,
                                  precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_native(x, kernel, padding, precision, forward_kind, native_grad):
  del native_grad  # used by the backward pass
  if forward_kind:
    return native.conv_forward(x, kernel, padding, forward_kind)
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DN,
                                  precision=precision)


def _conv_native_fwd(x, kernel, padding, precision, forward_kind, native_grad):
  return _conv_native(x, kernel, padding, precision, forward_kind, native_grad), (x, kernel)


def _conv_native_bwd(padding, precision, forward_kind, native_grad, residuals, dy):
  del forward_kind
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  (pt, pb), (pl, pr) = padding
  # The input gradient is the stride-1 convolution of dy with the flipped, transposed kernel,
  # padded k - 1 - p (dispatched like any other convolution).
  back_pad = ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr))
  if min(min(p) for p in back_pad) >= 0:
    dx = conv_stride1(dy, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2), back_pad, precision)
  else:
    _, input_vjp = jax.vjp(lambda x: lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=_DN, precision=precision), x)
    dx, = input_vjp(dy)
  if native_grad:
    dw = native.conv_kernel_grad(x, dy, (kh, kw), padding)
  else:
    dw = native.xla_conv_kernel_grad(x, dy, (kh, kw), padding)
  return dx, dw.astype(kernel.dtype)


_conv_native.defvjp(_conv_native_fwd, _conv_native_bwd)


def _space_to_depth(x: jax.Array) -> jax.Array:
  """(B, 2H, 2W, C) -> (B, H, W, 4C), channels ordered (row phase, column phase, c).

  Strided slices rather than a reshape, so that a batch-sharded array under an explicit-sharding
  mesh needs no sharding annotation."""
  return jnp.concatenate([x[:, p1::2, p2::2, :] for p1 in (0, 1) for p2 in (0, 1)], axis=-1)


def _merge_keeping_batch_sharding(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """x.reshape(shape) for a reshape that keeps axis 0; under an explicit-sharding mesh JAX asks
  for the output sharding of such a reshape: axis 0 keeps its mesh axes."""
  sharding = jax.typeof(x).sharding
  spec = getattr(sharding, 'spec', None)
  if spec and spec[0] is not None:
    return lax.reshape(x, shape, out_sharding=jax.sharding.NamedSharding(
        sharding.mesh, jax.sharding.PartitionSpec(spec[0])))
  return x.reshape(shape)
