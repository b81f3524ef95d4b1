r"""Serving exports of the PRNet forward pass: `jax.export` (default), ONNX, TFLite, SavedModel.

    python -m prnet_jax.serving.export --checkpoint=DIR --output=prnet.jaxexport [--platforms=cpu,cuda]
    python -m prnet_jax.serving.export --checkpoint=DIR --output=prnet.onnx --format=onnx
    python -m prnet_jax.serving.export --checkpoint=DIR --output=prnet.tflite --format=tflite
    python -m prnet_jax.serving.export --checkpoint=DIR --output=prnet_savedmodel --format=savedmodel

Both take uint8 images (B, R, R, 3), any B, and return float32 position maps (B, R, R, 3) in
crop pixels. `--checkpoint` defaults to the bundled model.

jax: an `.npz` holding the serialised `jax.export.Exported` (StableHLO, batch size symbolic)
and the model variables as its leading arguments. Loading needs only JAX and NumPy, not Flax or
this package's model code:

    forward = prnet_jax.serving.export.load('prnet.jaxexport')   # or copy `load`: it is ten lines
    maps = forward(images)

onnx (the `onnx` extra): a self-contained ONNX graph (opset 17, `prnet_jax.serving.onnx_export`),
for onnxruntime and the runtimes that read ONNX:

    session = onnxruntime.InferenceSession('prnet.onnx')
    maps = session.run(None, {'images': images})[0]

tflite and savedmodel (the `tf` extra, to write them; `prnet_jax.serving.tf_export`): the
network in TensorFlow ops, input 'images', output 'position_maps'. The SavedModel takes any
batch; the TFLite model a fixed one (`--tflite_batch`, default 1):

    interpreter = ai_edge_litert.interpreter.Interpreter('prnet.tflite')   # or tf.lite
    loaded = tf.saved_model.load('prnet_savedmodel')
    maps = loaded.signatures['serving_default'](images=images)['position_maps']
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import Callable, Optional, Sequence

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

# Only JAX and NumPy at import time: `load` must work where Flax is not installed.

FORMATS = ('jax', 'onnx', 'tflite', 'savedmodel')


def export_forward(model, variables, platforms: Sequence[str] = ('cpu',)):
  """(Exported, flat variables): f(*flat_variables, images) -> position maps."""
  from prnet_jax.nn.model import inference_fn
  prepare, forward = inference_fn(model)
  variables = prepare(variables)  # decoder kernels rearranged once, here
  flat, treedef = jax.tree_util.tree_flatten(variables)
  flat = [np.asarray(x) for x in flat]

  def exported_forward(*args):
    return forward(jax.tree_util.tree_unflatten(treedef, args[:-1]), args[-1])

  (b,) = jax_export.symbolic_shape('b')
  r = model.resolution
  specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in flat]
  specs.append(jax.ShapeDtypeStruct((b, r, r, 3), jnp.uint8))
  # Plain XLA ops only: the artifact must run where prnet_jax's native kernels are not there.
  from prnet_jax.nn import conv_ops
  with conv_ops.native_kernels(False):
    exported = jax_export.export(jax.jit(exported_forward), platforms=tuple(platforms))(*specs)
  return exported, flat


def save(path: str, exported, flat_variables, meta: dict) -> None:
  """Writes the export through a temporary file beside `path`: a failure leaves `path` as it
  was (OSError names the path)."""
  arrays = {f'v{i:04d}': x for i, x in enumerate(flat_variables)}
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      np.savez(f, exported=np.frombuffer(exported.serialize(), np.uint8),
               meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load(path: str) -> Callable[[np.ndarray], jax.Array]:
  """The exported forward as a function of uint8 images (B, R, R, 3), for any B."""
  with open(path, 'rb') as f:
    data = np.load(io.BytesIO(f.read()))
  exported = jax_export.deserialize(bytearray(data['exported'].tobytes()))
  flat = [jnp.asarray(data[k]) for k in sorted(k for k in data.files if k.startswith('v'))]
  return lambda images: exported.call(*flat, jnp.asarray(images, jnp.uint8))


def save_onnx(path: str, proto) -> None:
  """Writes the ONNX model through a temporary file beside `path` (as `save`)."""
  save_bytes(path, proto.SerializeToString())


def save_bytes(path: str, data: bytes) -> None:
  """Writes `data` through a temporary file beside `path` (as `save`)."""
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def main(argv: Optional[Sequence[str]] = None) -> int:
  from prnet_jax.nn import checkpoints
  p = argparse.ArgumentParser(
      description='Export the PRNet forward pass (jax.export, ONNX, TFLite or SavedModel).')
  p.add_argument('--checkpoint', default=checkpoints.PRETRAINED,
                 help='a checkpoint directory or a run\'s workdir; default: the bundled model')
  p.add_argument('--output', required=True)
  p.add_argument('--format', default='jax', choices=FORMATS)
  p.add_argument('--platforms', default='cpu', help='jax format: comma-separated cpu,cuda,tpu')
  p.add_argument('--tflite_batch', type=int, default=1,
                 help='tflite format: its fixed batch size (static shapes run 3.5x faster)')
  a = p.parse_args(argv)
  from prnet_jax.nn.model import PRNet
  if a.format == 'tflite' and a.tflite_batch < 1:
    print(f'error: --tflite_batch must be at least 1, not {a.tflite_batch}', file=sys.stderr)
    return 1
  needs = {'onnx': ('onnx', 'onnx'), 'tflite': ('tensorflow', 'tf'),
           'savedmodel': ('tensorflow', 'tf')}.get(a.format)
  if needs:
    import importlib.util
    if importlib.util.find_spec(needs[0]) is None:
      print(f'error: --format={a.format} needs the `{needs[1]}` extra: '
            f'pip install "prnet-jax[{needs[1]}]"', file=sys.stderr)
      return 1
  try:
    variables, model_config, step = checkpoints.load_variables(a.checkpoint)
  except checkpoints.CheckpointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  r = model_config.resolution
  try:
    if a.format == 'onnx':
      from prnet_jax.serving import onnx_export
      save_onnx(a.output, onnx_export.build(model_config, variables))
      print(f'wrote {a.output}: ONNX opset {onnx_export.OPSET}, input {onnx_export.INPUT!r} '
            f'uint8 (batch, {r}, {r}, 3), output {onnx_export.OUTPUT!r} float32')
      return 0
    if a.format in ('tflite', 'savedmodel'):
      from prnet_jax.serving import tf_export
      module = tf_export.build(model_config, variables)
      if a.format == 'tflite':
        save_bytes(a.output, tf_export.to_tflite(module, a.tflite_batch))
      else:
        tf_export.save_saved_model(a.output, module)
      print(f'wrote {a.output}: {a.format}, input {tf_export.INPUT!r} uint8 (batch, {r}, {r}, 3), '
            f'output {tf_export.OUTPUT!r} float32')
      return 0
    model = PRNet.from_config(model_config)
    exported, flat = export_forward(model, variables, a.platforms.split(','))
    save(a.output, exported, flat, {'model_config': model_config.to_dict(),
                                    'step': int(step), 'checkpoint': a.checkpoint})
  except OSError as e:
    print(f'error: cannot write {a.output}: {e.strerror or e}', file=sys.stderr)
    return 1
  except ValueError as e:  # e.g. variables of another architecture
    print(f'error: {a.checkpoint}: {e}', file=sys.stderr)
    return 1
  print(f'wrote {a.output}: input uint8 (b, {r}, {r}, 3), platforms {a.platforms}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
