"""The PRNet forward pass as an ONNX graph, written from the model's variables.

The graph is built layer by layer (`layer_walk`) from the same variables the Flax model uses
(TF kernel layouts, BatchNorm moving statistics), mirroring ``prnet_jax.nn.model.PRNet`` in inference
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

from typing import Any, Mapping

import numpy as np

from prnet_jax.nn import model as model_lib
from prnet_jax.serving import layer_walk

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


class _OnnxOps:
  """`layer_walk.Backend` writing ONNX nodes (NCHW)."""

  def __init__(self, g: _Graph):
    self.g = g

  def conv(self, x, n, kernel, stride, transpose, name):
    g, k = self.g, kernel.shape[0]
    w = g.const(f'{name}/kernel', kernel.transpose(3, 2, 0, 1))
    # A transposed conv crops the padding of the conv it transposes (from n * stride to n).
    before, after = layer_walk.same_pads(n * stride if transpose else n, stride, k)
    return g.op('ConvTranspose' if transpose else 'Conv', [x, w], name, kernel_shape=[k, k],
                strides=[stride, stride], pads=[before, before, after, after])

  def bn_act(self, x, scale, bias, mean, var, activation, name):
    g = self.g
    inputs = [x] + [g.const(f'{name}/{key}', value) for key, value in
                    (('scale', scale), ('bias', bias), ('mean', mean), ('var', var))]
    y = g.op('BatchNormalization', inputs, name, epsilon=model_lib.BN_EPSILON)
    if activation == 'relu':
      return g.op('Relu', [y], f'{name}/relu')
    if activation == 'sigmoid':
      return g.op('Sigmoid', [y], f'{name}/sigmoid')
    return y

  def add(self, a, b, name):
    return self.g.op('Add', [a, b], name)


def build(model_config: model_lib.ModelConfig, variables: Mapping[str, Any],
          opset: int = OPSET):
  """The ONNX ModelProto of the inference forward pass of `variables` (float32 weights).

  Raises ValueError when the variables do not have the layers `model_config` describes."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper

  layer_walk.check_layers(variables['params'])
  g = _Graph(helper, numpy_helper)
  r = model_config.resolution
  x = g.op('Cast', [INPUT], 'to_float', to=TensorProto.FLOAT)
  x = g.op('Mul', [x, g.const('inv_255', np.array(1 / 255, np.float32))], 'scale')
  x = g.op('Transpose', [x], 'to_nchw', perm=[0, 3, 1, 2])
  x = layer_walk.walk(model_config, variables, x, _OnnxOps(g))
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
