"""The PRNet forward pass as an ONNX graph, written from the model's variables.

The graph is built layer by layer from the same variables the Flax model uses (TF kernel
layouts, BatchNorm moving statistics), mirroring ``prnet_jax.nn.model.PRNet`` in inference
mode: input uint8 images ``(B, R, R, 3)`` (any B), output float32 position maps
``(B, R, R, 3)`` in crop pixels, the same function as the `jax.export` artifact.

Conventions, each checked by the parity test against the JAX forward (tests/test_export.py):
* TF 'SAME' padding is explicit: for input side n, stride s, kernel k the conv pads
  ``max((ceil(n/s) - 1) * s + k - n, 0)`` split floor / ceil (before / after);
* a transposed conv is the adjoint of that conv (ONNX ``ConvTranspose`` is the gradient of
  ``Conv`` with the same weight), so it crops the conv's padding: ``pads`` = (before, after) of
  the conv from the output side to the input side;
* kernels: ``transpose(3, 2, 0, 1)`` takes a conv's ``[k, k, in, out]`` to ``Conv``'s
  ``(out, in, k, k)`` and a transposed conv's ``[k, k, out, in]`` to ``ConvTranspose``'s
  ``(in, out, k, k)``; no spatial flips;
* BatchNormalization with the moving statistics and epsilon 1e-3 (onnxruntime folds it).

Needs the ``onnx`` extra (``pip install "prnet-jax[onnx]"``); ``onnxruntime`` runs the result.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from prnet_jax.nn import model as model_lib

OPSET = 17
INPUT, OUTPUT = 'images', 'position_maps'


class _Graph:
  """Nodes and initialisers of a graph being built, in NCHW float32."""

  def __init__(self, helper, numpy_helper):
    self.helper, self.numpy_helper = helper, numpy_helper
    self.nodes, self.initializers = [], []
    self._count = 0

  def name(self, base: str) -> str:
    self._count += 1
    return f'{base}_{self._count}'

  def const(self, name: str, value: np.ndarray) -> str:
    self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
    return name

  def op(self, op_type: str, inputs: list[str], base: str, output: str | None = None,
         **attrs) -> str:
    name = self.name(base)
    out = output or name
    self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=name, **attrs))
    return out


def _same_pads(n: int, stride: int, k: int) -> tuple[int, int]:
  """TF 'SAME' padding (before, after) of a conv over side n."""
  total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
  return total // 2, total - total // 2


def _conv(g: _Graph, x: str, n: int, layer: Mapping[str, Any], stride: int, transpose: bool,
          name: str) -> tuple[str, int]:
  """Conv or transposed conv without bias; returns (output, output side)."""
  kernel = np.asarray(layer['kernel'], np.float32)
  k = kernel.shape[0]
  w = g.const(f'{name}/kernel', kernel.transpose(3, 2, 0, 1))
  if transpose:
    m = n * stride
    before, after = _same_pads(m, stride, k)  # the conv this transposes goes from m to n
    return g.op('ConvTranspose', [x, w], name, kernel_shape=[k, k], strides=[stride, stride],
                pads=[before, before, after, after]), m
  before, after = _same_pads(n, stride, k)
  return g.op('Conv', [x, w], name, kernel_shape=[k, k], strides=[stride, stride],
              pads=[before, before, after, after]), math.ceil(n / stride)


def _bn_act(g: _Graph, x: str, params: Mapping[str, Any], stats: Mapping[str, Any],
            activation: str | None, name: str) -> str:
  inputs = [x] + [g.const(f'{name}/{key}', np.asarray(tree[key], np.float32))
                  for tree, key in ((params, 'scale'), (params, 'bias'), (stats, 'mean'),
                                    (stats, 'var'))]
  y = g.op('BatchNormalization', inputs, name, epsilon=model_lib.BN_EPSILON)
  if activation == 'relu':
    return g.op('Relu', [y], f'{name}/relu')
  if activation == 'sigmoid':
    return g.op('Sigmoid', [y], f'{name}/sigmoid')
  return y


def _conv_bn(g, x, n, params, stats, stride, transpose, activation, name):
  y, n = _conv(g, x, n, params['conv'], stride, transpose, f'{name}/conv')
  return _bn_act(g, y, params['bn'], stats['bn'], activation, f'{name}/bn'), n


def build(model_config: model_lib.ModelConfig, variables: Mapping[str, Any],
          opset: int = OPSET):
  """The ONNX ModelProto of the inference forward pass of `variables` (float32 weights).

  Raises ValueError when the variables do not have the layers `model_config` describes."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper

  params, stats = variables['params'], variables.get('batch_stats', {})
  expected = (['conv0'] + [f'res{i}' for i in range(len(model_lib.ENCODER_BLOCKS))]
              + [f'deconv{i}' for i in range(len(model_lib.decoder_strides()))])
  if sorted(params) != sorted(expected):
    raise ValueError(f'the variables are not a PRNet of this architecture: layers '
                     f'{sorted(set(params) ^ set(expected))} differ')
  g = _Graph(helper, numpy_helper)
  r = model_config.resolution
  x = g.op('Cast', [INPUT], 'to_float', to=TensorProto.FLOAT)
  x = g.op('Mul', [x, g.const('inv_255', np.array(1 / 255, np.float32))], 'scale')
  x = g.op('Transpose', [x], 'to_nchw', perm=[0, 3, 1, 2])
  x, n = _conv_bn(g, x, r, params['conv0'], stats['conv0'], 1, False, 'relu', 'conv0')
  width = model_config.width
  for i, (mult, stride) in enumerate(model_lib.ENCODER_BLOCKS):
    name, p, s = f'res{i}', params[f'res{i}'], stats[f'res{i}']
    shortcut = x
    if 'shortcut' in p:
      shortcut, _ = _conv(g, x, n, p['shortcut']['conv'], stride, False, f'{name}/shortcut')
    elif stride != 1 or mult * width != p['conv3']['conv']['kernel'].shape[-1]:
      raise ValueError(f'{name}: a strided or widening block without a shortcut conv')
    y, m = _conv_bn(g, x, n, p['conv1'], s['conv1'], 1, False, 'relu', f'{name}/conv1')
    y, m = _conv_bn(g, y, m, p['conv2'], s['conv2'], stride, False, 'relu', f'{name}/conv2')
    y, m = _conv(g, y, m, p['conv3']['conv'], 1, False, f'{name}/conv3')
    y = g.op('Add', [y, shortcut], f'{name}/add')
    x, n = _bn_act(g, y, p['bn'], s['bn'], 'relu', f'{name}/bn'), m
  strides = model_lib.decoder_strides()
  for i, stride in enumerate(strides):
    last = i == len(strides) - 1
    x, n = _conv_bn(g, x, n, params[f'deconv{i}'], stats[f'deconv{i}'], stride, True,
                    'sigmoid' if last else 'relu', f'deconv{i}')
  if n != r:
    raise ValueError(f'the decoder ends at {n} px, not the model\'s {r}')
  x = g.op('Mul', [x, g.const('max_pos', np.array(model_config.max_pos, np.float32))],
           'to_pixels')
  g.op('Transpose', [x], 'to_nhwc', output=OUTPUT, perm=[0, 2, 3, 1])
  graph = helper.make_graph(
      g.nodes, 'prnet',
      [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ['batch', r, r, 3])],
      [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ['batch', r, r, 3])],
      g.initializers)
  proto = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)],
                            producer_name='prnet-jax')
  proto.doc_string = ('PRNet (Feng et al., ECCV 2018): uint8 face crops (batch, R, R, 3) in '
                      '[0, 255] -> UV position maps (batch, R, R, 3) in crop pixels')
  onnx.checker.check_model(proto, full_check=True)
  return proto
