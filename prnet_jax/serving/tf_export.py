"""The PRNet forward pass in TensorFlow ops, written from the model's variables: a SavedModel
(TF Serving, TF.js converters) and a TFLite flatbuffer (phones and other edge devices).

The network is written layer by layer (`layer_walk`) with `tf.nn.conv2d` and
`tf.nn.conv2d_transpose` at padding 'SAME', the conventions the Flax model follows (those of the
official TF1 PRNet), on NHWC tensors; kernels are used as stored (`[k, k, in, out]`, and
`[k, k, out, in]` for the transposed convs, which TF defines as the conv's adjoint, as the model
does); inference BatchNorm is folded into a scale and an offset per channel. Input uint8 images
`(B, R, R, 3)` (the SavedModel: any B; the TFLite model: a fixed B, 1 by default, since
XNNPACK runs the transposed convs only at static shapes: 3.5x faster at 256 px), output float32
position maps `(B, R, R, 3)` in crop pixels: the same function as the `jax.export` and ONNX
artifacts.

Needs TensorFlow (the `tf` extra: ``pip install "prnet-jax[tf]"``), only to write the files.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Mapping

import numpy as np

from prnet_jax.nn import model as model_lib
from prnet_jax.serving import layer_walk

INPUT = 'images'
OUTPUT = 'position_maps'


class _TfOps:
  """`layer_walk.Backend` in TensorFlow ops (NHWC)."""

  def __init__(self, tf):
    self.tf = tf

  def conv(self, x, n, kernel, stride, transpose, name):
    tf = self.tf
    if transpose:
      shape = tf.stack([tf.shape(x)[0], n * stride, n * stride, kernel.shape[2]])
      return tf.nn.conv2d_transpose(x, tf.constant(kernel), shape, stride, 'SAME', name=name)
    return tf.nn.conv2d(x, tf.constant(kernel), stride, 'SAME', name=name)

  def bn_act(self, x, scale, bias, mean, var, activation, name):
    tf = self.tf
    k = (scale / np.sqrt(var + np.float32(model_lib.BN_EPSILON))).astype(np.float32)
    y = x * tf.constant(k) + tf.constant((bias - mean * k).astype(np.float32))
    if activation == 'relu':
      return tf.nn.relu(y, name=f'{name}/relu')
    if activation == 'sigmoid':
      return tf.math.sigmoid(y, name=f'{name}/sigmoid')
    return y

  def add(self, a, b, name):
    return self.tf.add(a, b, name=name)


def build(model_config: model_lib.ModelConfig, variables: Mapping[str, Any]):
  """A `tf.Module` whose `serve(images)` (a `tf.function`, uint8 `(None, R, R, 3)`) returns
  {'position_maps': ...}; `forward` is the same as a Python function (for other signatures).
  Raises ValueError when the variables are not this architecture's."""
  import tensorflow as tf
  layer_walk.check_layers(variables['params'])
  r = model_config.resolution
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}

  def forward(images):
    x = tf.cast(images, tf.float32) * np.float32(1 / 255)
    x = layer_walk.walk(model_config, variables, x, _TfOps(tf))
    return {OUTPUT: tf.identity(x * np.float32(model_config.max_pos), name=OUTPUT)}

  module = tf.Module()
  module.resolution, module.forward = r, forward
  module.serve = tf.function(forward, input_signature=[
      tf.TensorSpec([None, r, r, 3], tf.uint8, name=INPUT)])
  module.serve.get_concrete_function()  # traces now: layer errors surface here
  return module


def save_saved_model(path: str, module) -> None:
  """Writes a SavedModel directory (signature 'serving_default': images -> position_maps)
  through a temporary directory beside `path`: a failure leaves `path` as it was."""
  import tensorflow as tf
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    tf.saved_model.save(module, tmp, signatures={'serving_default': module.serve})
    if os.path.isdir(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def to_tflite(module, batch: int = 1) -> bytes:
  """The TFLite flatbuffer of `module.forward` on `batch` images (float32 builtin ops)."""
  import tensorflow as tf
  if batch < 1:
    raise ValueError(f'the TFLite batch size must be at least 1, not {batch}')
  r = module.resolution
  fixed = tf.function(module.forward, input_signature=[
      tf.TensorSpec([batch, r, r, 3], tf.uint8, name=INPUT)], autograph=False)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [fixed.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  return converter.convert()
