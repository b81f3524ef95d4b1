"""The PRNet inference forward pass as a walk over its layers, for exporters that write the
network in another framework's ops (`onnx_export`, `tf_export`).

`walk` reads the same variables the Flax model uses (TF kernel layouts `[k, k, in, out]`,
transposed convs `[k, k, out, in]`, BatchNorm moving statistics) and calls a backend's three
operations in the order of ``prnet_jax.nn.model.PRNet`` in inference mode; the backend decides
the tensor layout. Shapes are checked here once for every backend: the layers must be the
architecture's, and the decoder must end at the model's resolution.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Protocol

import numpy as np

from prnet_jax.nn import model as model_lib


class Backend(Protocol):
  def conv(self, x: Any, n: int, kernel: np.ndarray, stride: int, transpose: bool,
           name: str) -> Any:
    """Conv (or transposed conv) without bias, TF 'SAME' padding, over an n x n input."""

  def bn_act(self, x: Any, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
             var: np.ndarray, activation: str | None, name: str) -> Any:
    """Inference BatchNorm (epsilon `model_lib.BN_EPSILON`), then 'relu', 'sigmoid' or None."""

  def add(self, a: Any, b: Any, name: str) -> Any:
    ...


def same_pads(n: int, stride: int, k: int) -> tuple[int, int]:
  """TF 'SAME' padding (before, after) of a conv over side n."""
  total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
  return total // 2, total - total // 2


def check_layers(params: Mapping[str, Any]) -> None:
  expected = (['conv0'] + [f'res{i}' for i in range(len(model_lib.ENCODER_BLOCKS))]
              + [f'deconv{i}' for i in range(len(model_lib.decoder_strides()))])
  if sorted(params) != sorted(expected):
    raise ValueError(f'the variables are not a PRNet of this architecture: layers '
                     f'{sorted(set(params) ^ set(expected))} differ')


def walk(model_config: model_lib.ModelConfig, variables: Mapping[str, Any], x: Any,
         backend: Backend) -> Any:
  """Images in [0, 1] (the backend's tensor `x`) -> the decoder's sigmoid output in [0, 1]
  (multiply by `model_config.max_pos` for crop pixels). Raises ValueError when the variables
  do not have the layers `model_config` describes."""
  params, stats = variables['params'], variables.get('batch_stats', {})
  check_layers(params)
  f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731

  def conv(x, n, layer, stride, transpose, name):
    kernel = f32(layer['kernel'])
    m = n * stride if transpose else math.ceil(n / stride)
    return backend.conv(x, n, kernel, stride, transpose, name), m

  def bn_act(x, p, s, activation, name):
    return backend.bn_act(x, f32(p['scale']), f32(p['bias']), f32(s['mean']), f32(s['var']),
                          activation, name)

  def conv_bn(x, n, p, s, stride, transpose, activation, name):
    y, m = conv(x, n, p['conv'], stride, transpose, f'{name}/conv')
    return bn_act(y, p['bn'], s['bn'], activation, f'{name}/bn'), m

  r, width = model_config.resolution, model_config.width
  x, n = conv_bn(x, r, params['conv0'], stats['conv0'], 1, False, 'relu', 'conv0')
  for i, (mult, stride) in enumerate(model_lib.ENCODER_BLOCKS):
    name, p, s = f'res{i}', params[f'res{i}'], stats[f'res{i}']
    shortcut = x
    if 'shortcut' in p:
      shortcut, _ = conv(x, n, p['shortcut']['conv'], stride, False, f'{name}/shortcut')
    elif stride != 1 or mult * width != p['conv3']['conv']['kernel'].shape[-1]:
      raise ValueError(f'{name}: a strided or widening block without a shortcut conv')
    y, m = conv_bn(x, n, p['conv1'], s['conv1'], 1, False, 'relu', f'{name}/conv1')
    y, m = conv_bn(y, m, p['conv2'], s['conv2'], stride, False, 'relu', f'{name}/conv2')
    y, m = conv(y, m, p['conv3']['conv'], 1, False, f'{name}/conv3')
    x, n = bn_act(backend.add(y, shortcut, f'{name}/add'), p['bn'], s['bn'], 'relu',
                  f'{name}/bn'), m
  strides = model_lib.decoder_strides()
  for i, stride in enumerate(strides):
    last = i == len(strides) - 1
    x, n = conv_bn(x, n, params[f'deconv{i}'], stats[f'deconv{i}'], stride, True,
                   'sigmoid' if last else 'relu', f'deconv{i}')
  if n != r:
    raise ValueError(f'the decoder ends at {n} px, not the model\'s {r}')
  return x
