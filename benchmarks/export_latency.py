"""Batch-1 latency of the serving forward pass: JAX (jit), the jax.export artifact, ONNX Runtime,
the TFLite interpreter (where TensorFlow is installed).

  python benchmarks/export_latency.py                 # the bundled model and the full 256 px one
  python benchmarks/export_latency.py --small         # the bundled model only (a quick check)

Each row is one model and runtime: the median of `--repeats` calls on one uint8 crop after a
warm-up call (compile excluded). The full model has random weights (same cost as trained ones).
ONNX Runtime runs on the CPU with its default threads (all cores); TFLite with XNNPACK on
all cores.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import median, report, time_calls  # noqa: E402
from prnet_jax import runtime  # noqa: E402
from prnet_jax.nn import checkpoints  # noqa: E402
from prnet_jax.nn.model import ModelConfig, PRNet, inference_fn, init_variables  # noqa: E402
from prnet_jax.serving import export, onnx_export  # noqa: E402


def models(small: bool):
  variables, config, _ = checkpoints.load_variables(checkpoints.PRETRAINED)
  yield 'bundled', config, variables
  if not small:
    config = ModelConfig()
    yield 'full (random weights)', config, init_variables(PRNet.from_config(config),
                                                          jax.random.key(0))


def _tflite_call(config, variables, x):
  """A call of the TFLite export on `x`, or None without TensorFlow."""
  import importlib.util
  if importlib.util.find_spec('tensorflow') is None:
    return None
  import warnings

  import tensorflow as tf

  from prnet_jax.serving import tf_export
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # tf.lite.Interpreter's deprecation notice
    interpreter = tf.lite.Interpreter(
        model_content=tf_export.to_tflite(tf_export.build(config, variables), batch=1),
        num_threads=os.cpu_count())
  (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
  interpreter.allocate_tensors()

  def call():
    interpreter.set_tensor(inp['index'], x)
    interpreter.invoke()
    return interpreter.get_tensor(out['index'])
  return call


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true')
  p.add_argument('--repeats', type=int, default=50)
  p.add_argument('--output', default='benchmarks/results/export_latency.json')
  a = p.parse_args()
  import onnxruntime as ort
  rows = []
  folder = tempfile.mkdtemp()
  for name, config, variables in models(a.small):
    r = config.resolution
    x = np.random.default_rng(0).integers(0, 256, (1, r, r, 3), np.uint8)
    prepare, forward = inference_fn(PRNet.from_config(config))
    prepared, fwd = prepare(variables), jax.jit(forward)
    path = os.path.join(folder, f'{r}.jaxexport')
    exported, flat = export.export_forward(PRNet.from_config(config), variables)
    export.save(path, exported, flat, {})
    loaded = export.load(path)
    session = ort.InferenceSession(onnx_export.build(config, variables).SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    runs = {'jax (jit, native kernels)': lambda: fwd(prepared, x).block_until_ready(),
            'jax.export artifact': lambda: loaded(x).block_until_ready(),
            'onnxruntime': lambda: session.run(None, {onnx_export.INPUT: x})}
    tflite = _tflite_call(config, variables, x)
    if tflite is not None:
      runs['tflite (XNNPACK)'] = tflite
    for runtime_name, call in runs.items():
      call()  # warm-up (compiles)
      t = median(time_calls(call, a.repeats))
      rows.append({'model': name, 'resolution': r, 'width': config.width,
                   'runtime': runtime_name, 'batch1_ms': 1e3 * t})
  report('export_latency', rows, list(rows[0]), a.output)


if __name__ == '__main__':
  runtime.restart_tuned()
  main()
