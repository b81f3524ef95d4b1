"""Compile time and forward (inference) time of the PRNet network.

  python benchmarks/model_forward.py                          # full model, batches 1, 16, 64
  python benchmarks/model_forward.py --impl=reference         # the straightforward flax port
  python benchmarks/model_forward.py --dtype=bfloat16 --batch_sizes=1,256   # accelerators

Compile is measured from a fresh `jax.jit` (lower + compile, no persistent cache); forward is the
median of `--repeats` calls after one warm-up call.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # noqa: E402

from benchmarks.common import median, report, time_calls  # noqa: E402
from prnet_jax import runtime  # noqa: E402  (XLA:CPU settings: runtime.restart_tuned)
from prnet_jax.nn.model import ModelConfig, PRNet, inference_fn, init_variables  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--resolution', type=int, default=256)
  p.add_argument('--width', type=int, default=16)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--batch_sizes', default='1,16,64')
  p.add_argument('--impl', default='fast', help="'fast' (kernels prepared once) or 'reference'")
  p.add_argument('--repeats', type=int, default=10)
  p.add_argument('--output', default='benchmarks/results/model_forward.json')
  a = p.parse_args()
  cfg = ModelConfig(a.resolution, a.width, a.dtype, impl=a.impl)
  model = PRNet.from_config(cfg)
  variables = jax.jit(lambda k: init_variables(model, k))(jax.random.key(0))
  prepare, forward = inference_fn(model)  # as the predictor and evaluators run it
  variables = prepare(variables)
  rows = []
  for bs in [int(b) for b in a.batch_sizes.split(',')]:
    x = jax.random.uniform(jax.random.key(1), (bs, a.resolution, a.resolution, 3)) * 255
    fwd = jax.jit(forward)
    t = time.perf_counter()
    compiled = fwd.lower(variables, x).compile()
    compile_s = time.perf_counter() - t
    compiled(variables, x).block_until_ready()  # warm-up
    times = time_calls(lambda: compiled(variables, x).block_until_ready(), a.repeats)
    flops = (compiled.cost_analysis() or {}).get('flops', float('nan'))
    rows.append({'resolution': a.resolution, 'width': a.width, 'dtype': a.dtype,
                 'impl': a.impl, 'batch': bs,
                 'compile_s': compile_s, 'forward_ms': 1e3 * median(times),
                 'images_per_s': bs / median(times), 'gflop_per_image': flops / bs / 1e9})
  report('model_forward', rows, list(rows[0]), a.output)


if __name__ == '__main__':
  runtime.restart_tuned()
  main()
