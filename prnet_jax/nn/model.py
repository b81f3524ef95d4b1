"""The PRNet encoder-decoder ("resfcn256") in Flax Linen.

A faithful port of the official TF1 network (``predictor.py`` of YadiraF/PRNet):

* encoder: conv 4x4/1 -> 16 ch, then 10 residual blocks down to 8x8x512;
* decoder: 17 transposed convs 4x4, the last one BN + sigmoid;
* no biases anywhere, BatchNorm(scale=True, eps=1e-3, decay=0.999), TF 'SAME' padding
  (Flax's 'SAME' is TF's: stride-1 4x4 pads 1 before / 2 after, stride-2 pads 1 / 1);
* transposed convs are the gradient of a conv (``transpose_kernel=True``) with the kernel
  stored as TF does, ``[kh, kw, out, in]``, so official weights load without flips.

The network maps images ``(B, R, R, 3)`` in ``[0, 1]`` to UV position maps ``(B, R, R, 3)`` in
input pixels: ``sigmoid(...) * max_pos`` with ``max_pos = 1.1 * R`` (281.6 for R = 256).

Run ``python -m prnet_jax.nn.model`` for a per-layer table of the default model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, Mapping, Optional, Sequence

from flax import linen as nn
import jax
import jax.numpy as jnp

from prnet_jax.nn import conv_ops
from prnet_jax.nn.batchnorm import BatchNormAct, activate

# (channel multiplier of `width`, stride) of the 10 residual blocks and 17 transposed convs.
ENCODER_BLOCKS: tuple[tuple[int, int], ...] = (
    (2, 2), (2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2), (16, 1), (32, 2), (32, 1))
DECODER_LAYERS: tuple[tuple[int, int], ...] = (
    (32, 1), (16, 2), (16, 1), (16, 1), (8, 2), (8, 1), (8, 1), (4, 2), (4, 1), (4, 1),
    (2, 2), (2, 1), (1, 2), (1, 1))
# The last three decoder layers have 3 output channels regardless of width.
NUM_OUTPUT_LAYERS = 3
KERNEL_SIZE = 4
BN_MOMENTUM = 0.999   # TF's batch_norm `decay`.
BN_EPSILON = 1e-3
MAX_POS_FACTOR = 1.1  # Output scale: MaxPos = 1.1 * resolution.
DOWNSAMPLING = 2 ** sum(1 for _, s in ENCODER_BLOCKS if s == 2)

# TF contrib layers initialise weights with Glorot uniform.
default_kernel_init = nn.initializers.xavier_uniform()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters that change the network's function or shapes.

  Attributes:
    resolution: input and output side in pixels; a multiple of 32 (five stride-2 stages).
    width: channels of the first conv ("size" in the official code); 16 is PRNet.
    dtype: compute dtype name ('float32' or 'bfloat16'); params and BN statistics stay float32.
    bn_momentum: decay of the BatchNorm moving statistics (TF's 0.999; short runs need less,
      or evaluation sees statistics still dominated by their initial values).
    impl: 'fast' (default) or 'reference': how layers are computed (``prnet_jax.nn.conv_ops``,
      ``prnet_jax.nn.batchnorm``); the same function and parameters either way. 'reference' is
      the straightforward port (flax ``Conv``/``ConvTranspose``/``BatchNorm``).
  """
  resolution: int = 256
  width: int = 16
  dtype: str = 'float32'
  bn_momentum: float = BN_MOMENTUM
  impl: str = 'fast'

  @property
  def max_pos(self) -> float:
    return MAX_POS_FACTOR * self.resolution

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_mapping(cls, m: Mapping[str, Any]) -> 'ModelConfig':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(m) - known
    if unknown:
      raise ValueError(f'Unknown model config fields {sorted(unknown)}; known: {sorted(known)}')
    return cls(**dict(m))


def _dtype(name: str) -> Any:
  try:
    return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16,
            'float64': jnp.float64}[name]
  except KeyError:
    raise ValueError(f"dtype must be 'float32', 'bfloat16', 'float16' or 'float64' (a "
                     f"reference for tests; needs jax_enable_x64), got {name!r}") from None


class Conv(nn.Module):
  """A bias-free TF-'SAME' conv or transposed conv with ``flax.linen.Conv``'s parameter layout.

  The kernel is the same parameter, with the same shape and initialisation, as
  ``nn.Conv(use_bias=False)`` (``[k, k, in, out]``) or ``nn.ConvTranspose(transpose_kernel=True)``
  (``[k, k, out, in]``) would create under the name ``kernel``, so checkpoints and official weights
  load unchanged; ``impl`` picks how it is computed (``prnet_jax.nn.conv_ops``).
  """
  features: int
  kernel_size: int = KERNEL_SIZE
  strides: int = 1
  transpose: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  impl: str = 'fast'
  prepared: bool = False  # transposed-conv kernel already in conv_ops.prepare_transpose_kernel form

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    shape = (k, k, self.features, cin) if self.transpose else (k, k, cin, self.features)
    if self.transpose and self.prepared:
      shape = jax.eval_shape(lambda: conv_ops.prepare_transpose_kernel(
          jnp.zeros(shape), self.strides)).shape
    kernel = self.param('kernel', default_kernel_init, shape, self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.transpose and self.prepared:
      return conv_ops.conv_transpose_prepared(x, kernel, self.strides)
    op = conv_ops.conv_transpose_same if self.transpose else conv_ops.conv_same
    return op(x, kernel, self.strides, self.impl)


class ConvBN(nn.Module):
  """Conv (or transposed conv) without bias, then optional BatchNorm and activation."""
  features: int
  kernel_size: int = KERNEL_SIZE
  strides: int = 1
  transpose: bool = False
  use_bn: bool = True
  activation: Optional[str] = 'relu'  # None, 'relu' or 'sigmoid'
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM
  param_dtype: Any = jnp.float32
  impl: str = 'fast'
  prepared: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = Conv(self.features, self.kernel_size, self.strides, self.transpose, self.dtype,
             self.param_dtype, self.impl, self.prepared, name='conv')(x)
    if self.use_bn:
      return batch_norm_act(x, train, self.activation, self.dtype, self.bn_momentum,
                            self.param_dtype, self.impl, name='bn')
    return activate(x, self.activation)


def batch_norm_act(x: jax.Array, train: bool, activation: Optional[str], dtype: Any,
                   momentum: float, param_dtype: Any, impl: str, name: str) -> jax.Array:
  """BatchNorm then activation; 'fast' fuses them with a hand-written backward pass.

  Statistics are reduced in float32 even for bf16 compute; under jit with a data-sharded batch
  the mean is over the global batch (XLA inserts the cross-device reduction).
  """
  if impl == 'fast':
    return BatchNormAct(use_running_average=not train, momentum=momentum, epsilon=BN_EPSILON,
                        activation=activation, dtype=dtype, param_dtype=param_dtype,
                        name=name)(x)
  x = nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=BN_EPSILON,
                   use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, name=name)(x)
  return activate(x, activation)


class ResBlock(nn.Module):
  """Bottleneck residual block: out = relu(bn(conv1x1(conv4x4(conv1x1(x))) + shortcut(x)))."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM
  param_dtype: Any = jnp.float32
  impl: str = 'fast'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    shortcut = x
    kw = dict(dtype=self.dtype, bn_momentum=self.bn_momentum, param_dtype=self.param_dtype,
              impl=self.impl)
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = ConvBN(self.features, 1, self.strides, use_bn=False, activation=None,
                        name='shortcut', **kw)(x, train)
    half = self.features // 2
    y = ConvBN(half, 1, 1, name='conv1', **kw)(x, train)
    y = ConvBN(half, KERNEL_SIZE, self.strides, name='conv2', **kw)(y, train)
    y = ConvBN(self.features, 1, 1, use_bn=False, activation=None, name='conv3', **kw)(y, train)
    return batch_norm_act(y + shortcut, train, 'relu', self.dtype, self.bn_momentum,
                          self.param_dtype, self.impl, name='bn')


class PRNet(nn.Module):
  """Images (B, R, R, 3) in [0, 1] -> position maps (B, R, R, 3) in input pixels (float32)."""
  resolution: int = 256
  width: int = 16
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM
  param_dtype: Any = jnp.float32  # float64 only for the float64 reference
  impl: str = 'fast'  # or 'reference': same function and parameters, other code
  prepared: bool = False  # variables from prepare_for_inference (decoder kernels rearranged)

  @classmethod
  def from_config(cls, config: ModelConfig | Mapping[str, Any]) -> 'PRNet':
    if not isinstance(config, ModelConfig):
      config = ModelConfig.from_mapping(config)
    dtype = _dtype(config.dtype)
    return cls(resolution=config.resolution, width=config.width, dtype=dtype,
               bn_momentum=config.bn_momentum,
               param_dtype=jnp.float64 if dtype == jnp.float64 else jnp.float32,
               impl=config.impl)

  @property
  def max_pos(self) -> float:
    return MAX_POS_FACTOR * self.resolution

  def setup_check(self, images: jax.Array) -> None:
    if self.resolution % DOWNSAMPLING:
      raise ValueError(f'resolution must be a multiple of {DOWNSAMPLING}, got {self.resolution}')
    if self.width < 1:
      raise ValueError(f'width must be positive, got {self.width}')
    expected = (self.resolution, self.resolution, 3)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
      raise ValueError(f'PRNet expects images of shape (batch, {expected[0]}, {expected[1]}, 3), '
                       f'got {tuple(images.shape)}')

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    self.setup_check(images)
    w = self.width
    kw = dict(dtype=self.dtype, bn_momentum=self.bn_momentum, param_dtype=self.param_dtype,
              impl=self.impl)
    x = images.astype(self.dtype)
    x = ConvBN(w, name='conv0', **kw)(x, train)
    for i, (mult, stride) in enumerate(ENCODER_BLOCKS):
      x = ResBlock(w * mult, stride, name=f'res{i}', **kw)(x, train)
    layers = [(w * m, s) for m, s in DECODER_LAYERS] + [(3, 1)] * NUM_OUTPUT_LAYERS
    if self.prepared and (train or self.impl != 'fast'):
      raise ValueError('a model from prepare_for_inference runs inference only (train=False, '
                       "impl='fast')")
    for i, (features, stride) in enumerate(layers):
      last = i == len(layers) - 1
      x = ConvBN(features, strides=stride, transpose=True, prepared=self.prepared,
                 activation='sigmoid' if last else 'relu', name=f'deconv{i}', **kw)(x, train)
    out_dtype = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
    return x.astype(out_dtype) * self.max_pos


@functools.partial(jax.jit, static_argnums=(0, 2))
def init_variables(model: PRNet, rng: jax.Array, batch_size: int = 1) -> dict[str, Any]:
  """{'params': ..., 'batch_stats': ...} for `model` (float32); jitted (called eagerly,
  ``model.init`` would run, and compile, every layer's ops one by one: ~40 s for the small
  model on 2 CPU cores instead of ~1 s).

  Every kernel is Glorot-uniform (as ``model.init`` gives), but all of them are cut from one
  uniform draw: XLA:CPU compiles each random draw on its own (~0.05 s each), so with the 245
  per-kernel draws of ``model.init`` the jitted initialisation took 10.7 s (full model, 2 CPU
  cores) and with one draw 1.9 s. Under ``jax.jit`` the unused per-kernel draws of
  ``model.init`` are removed as dead code.
  """
  flax_rng, kernel_rng = jax.random.split(rng)
  shape = (batch_size, model.resolution, model.resolution, 3)
  variables = dict(model.init(flax_rng, jnp.zeros(shape, jnp.float32), train=False))
  variables['params'] = glorot_uniform_tree(kernel_rng, variables['params'])
  return variables


def glorot_uniform_tree(rng: jax.Array, params: Any) -> Any:
  """`params` with every leaf named ``kernel`` (``[kh, kw, a, b]``) replaced by
  U(-l, l), l = sqrt(6 / (fan_a + fan_b)), fan = kh * kw * channels (Flax's ``xavier_uniform``),
  all kernels cut from a single draw of ``rng``; other leaves are returned unchanged."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  kernels = [i for i, (path, _) in enumerate(leaves) if getattr(path[-1], 'key', None) == 'kernel']
  sizes = [math.prod(leaves[i][1].shape) for i in kernels]
  draw = jax.random.uniform(rng, (sum(sizes),), jnp.float32, -1.0, 1.0)
  out = [leaf for _, leaf in leaves]
  offset = 0
  for i, size in zip(kernels, sizes):
    leaf = leaves[i][1]
    receptive = math.prod(leaf.shape[:-2])
    limit = math.sqrt(6.0 / (receptive * (leaf.shape[-2] + leaf.shape[-1])))
    out[i] = (draw[offset:offset + size].reshape(leaf.shape) * limit).astype(leaf.dtype)
    offset += size
  return jax.tree_util.tree_unflatten(treedef, out)


def decoder_strides() -> list[int]:
  """Stride of each transposed conv, deconv0 .. deconv16."""
  return [s for _, s in DECODER_LAYERS] + [1] * NUM_OUTPUT_LAYERS


def prepare_for_inference(model: PRNet, variables: Mapping[str, Any]) -> tuple[PRNet, dict]:
  """(model, variables) computing the same inference function without rearranging the decoder
  kernels on every call (at batch 1 that rearranging was a third of the forward time).

  The result is for inference only (``train=False``): its kernels are not the TF layout that
  checkpoints, the converter and training use.
  """
  if model.impl != 'fast' or model.prepared:
    raise ValueError('prepare_for_inference needs a fast, not yet prepared model (impl='
                     f'{model.impl!r}, prepared={model.prepared})')
  params = {k: v for k, v in variables['params'].items()}
  for i, stride in enumerate(decoder_strides()):
    layer = dict(params[f'deconv{i}'])
    layer['conv'] = {'kernel': conv_ops.prepare_transpose_kernel(layer['conv']['kernel'],
                                                                 stride)}
    params[f'deconv{i}'] = layer
  out = dict(variables)
  out['params'] = params
  return model.clone(prepared=True), out


def inference_fn(model: PRNet) -> tuple[Callable[[Any], Any], Callable[[Any, jax.Array], jax.Array]]:
  """The inference forward pass, the one the predictor, the evaluators and the export share.

  Returns (prepare, forward):
  * prepare(variables) -> the variables `forward` takes (for the fast model, the decoder kernels
    rearranged once by `prepare_for_inference`; jit it where the variables change);
  * forward(prepared variables, images) -> float32 position maps (B, R, R, 3) in input pixels,
    from images (B, R, R, 3) holding pixel values in [0, 255]: uint8, or float (a float crop
    is used as it is, not rounded).
  """
  if model.impl == 'fast' and not model.prepared:
    net = model.clone(prepared=True)
    prepare = lambda variables: prepare_for_inference(model, variables)[1]
  else:
    net, prepare = model, lambda variables: variables

  def forward(variables, images: jax.Array) -> jax.Array:
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return net.apply(variables, x, train=False).astype(jnp.float32)
  return prepare, forward


def count_params(tree: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def layer_table(model: PRNet, batch_size: int = 1) -> tuple[list[tuple[str, tuple[int, ...],
                                                                         int, int]], int, int]:
  """Rows (name, output shape, trainable params, batch statistics) per top-level layer.

  Computed abstractly (``jax.eval_shape``): no FLOPs are spent.
  """
  images = jax.ShapeDtypeStruct((batch_size, model.resolution, model.resolution, 3), jnp.float32)

  def run(rng, x):
    variables = model.init(rng, x, train=False)
    _, state = model.apply(variables, x, train=False, capture_intermediates=True,
                           mutable=['intermediates'])
    return variables, state['intermediates']

  variables, inter = jax.eval_shape(run, jax.random.key(0), images)
  rows = []
  for name in sorted(variables['params'], key=_layer_order):
    params = variables['params'][name]
    stats = variables.get('batch_stats', {}).get(name, {})
    rows.append((name, tuple(inter[name]['__call__'][0].shape), count_params(params),
                 count_params(stats)))
  return rows, count_params(variables['params']), count_params(variables.get('batch_stats', {}))


def _layer_order(name: str) -> tuple[int, int]:
  prefix, index = re.fullmatch(r'([a-z]+)(\d+)', name).groups()
  return ({'conv': 0, 'res': 1, 'deconv': 2}[prefix], int(index))


def format_layer_table(model: PRNet, batch_size: int = 1) -> str:
  rows, n_params, n_stats = layer_table(model, batch_size)
  header = f"{'layer':<10} {'output shape':<22} {'params':>12} {'batch stats':>12}"
  lines = [header, '-' * len(header)]
  for name, shape, p, s in rows:
    lines.append(f'{name:<10} {str(shape):<22} {p:>12,} {s:>12,}')
  lines.append('-' * len(header))
  lines.append(f'trainable parameters: {n_params}, batch statistics: {n_stats}')
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  import argparse
  parser = argparse.ArgumentParser(description='Per-layer table of the PRNet network.')
  parser.add_argument('--resolution', type=int, default=ModelConfig.resolution)
  parser.add_argument('--width', type=int, default=ModelConfig.width)
  parser.add_argument('--dtype', default=ModelConfig.dtype)
  args = parser.parse_args(argv)
  model = PRNet.from_config(ModelConfig(args.resolution, args.width, args.dtype))
  print(format_layer_table(model))


if __name__ == '__main__':
  main()
