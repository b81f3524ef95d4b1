"""The chip's measured peaks and PRNet's place under them (the performance issue's GPU targets).

  python benchmarks/roofline.py                       # on a GPU/TPU: bf16, batch 1024 / 256
  python benchmarks/roofline.py --train_batches=64,256 --dtype=float32
  python benchmarks/roofline.py --impl=reference      # plain lax convolutions instead
  python benchmarks/roofline.py --small               # any machine, seconds (CPU smoke run)

One command measures, on the default backend:
* peaks: matrix-multiply TFLOP/s (square matmuls in the compute dtype) and memory bandwidth
  (a large elementwise pass: bytes read + written / time);
* inference: images/s at `--batch` (prepared kernels, as the predictor runs) and batch-1
  latency (median of `--repeats` calls);
* training: images/s of the real train step (`train.make_trainer`, augmentation off) at each
  of `--train_batches`;
* XLA's memory analysis of each compiled program (arguments + outputs + temporaries, GB per
  device), what decides the batch that fits;
* for each, XLA's cost analysis (FLOPs, bytes accessed), the roofline bound
  max(FLOPs / peak FLOP/s, bytes / peak bandwidth) and the fraction of it reached
  (bound time / measured time).
Prints a table and writes JSON.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'configs'))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import machine, median, report, time_calls  # noqa: E402
from prnet_jax import runtime  # noqa: E402  (XLA:CPU settings: runtime.restart_tuned)


def roofline(flops: float, bytes_accessed: float, seconds: float, peak_flops: float,
             peak_bytes_per_s: float) -> dict:
  """Achieved rates, the roofline bound (seconds) and the fraction of it reached."""
  bound = max(flops / peak_flops, bytes_accessed / peak_bytes_per_s)
  return {'tflops': flops / seconds / 1e12, 'gbytes_per_s': bytes_accessed / seconds / 1e9,
          'intensity': flops / max(bytes_accessed, 1.0), 'bound_ms': 1e3 * bound,
          'roofline_fraction': bound / seconds}


def _timed(compiled, args, repeats: int) -> float:
  jax.block_until_ready(compiled(*args))  # warm-up
  return median(time_calls(lambda: jax.block_until_ready(compiled(*args)), repeats))


def _cost(compiled) -> tuple[float, float]:
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  return float(cost.get('flops', float('nan'))), float(cost.get('bytes accessed', float('nan')))


def _memory_gb(compiled) -> float:
  """Arguments + outputs + temporaries of a compiled program, GB per device (NaN if unknown)."""
  m = compiled.memory_analysis()
  if m is None:
    return float('nan')
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes) / 1e9


def peak_matmul_flops(n: int, dtype, repeats: int) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
  return 2.0 * n ** 3 / _timed(f, (a, b), repeats)


def peak_bandwidth(num_bytes: int, repeats: int) -> float:
  """Bytes read + written per second by an elementwise pass over `num_bytes` of float32, the
  output written over the (donated) input so no call pays for fresh memory."""
  x = jnp.ones((num_bytes // 4,), jnp.float32)
  f = jax.jit(lambda x: x * 0.5 + 1.0, donate_argnums=0)
  x = jax.block_until_ready(f(x))  # compile + warm-up
  times = []
  for _ in range(max(repeats, 5)):
    t = time.perf_counter()
    x = jax.block_until_ready(f(x))
    times.append(time.perf_counter() - t)
  return 2.0 * x.size * 4 / median(times)  # read once, write once


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='synthetic', help='variant of configs/prnet.py')
  p.add_argument('--dtype', default='bfloat16', help='compute dtype (params stay float32)')
  p.add_argument('--impl', default='fast', help="layers: 'fast' (conv_ops) or 'reference' "
                 "(plain lax convolutions; may suit cuDNN better: measure both)")
  p.add_argument('--batch', type=int, default=1024, help='inference batch')
  p.add_argument('--train_batches', default='256', help='comma-separated train-step batches')
  p.add_argument('--matmul_n', type=int, default=8192)
  p.add_argument('--bandwidth_bytes', type=int, default=4 << 30)
  p.add_argument('--repeats', type=int, default=20)
  p.add_argument('--small', action='store_true',
                 help='a quick run anywhere: small model, batch 4, small peak probes')
  p.add_argument('--output', default='benchmarks/results/roofline.json')
  a = p.parse_args()
  if a.small:
    a.config, a.batch, a.train_batches = 'small', 4, '4'
    a.matmul_n, a.bandwidth_bytes, a.repeats = 512, 64 << 20, 3

  import prnet as config_module

  from prnet_jax.faces.face_model import derive_uv_assets
  from prnet_jax.faces.procedural_face import procedural_face_model
  from prnet_jax.nn.model import inference_fn, init_variables
  from prnet_jax.training import train

  dtype = jnp.dtype(a.dtype)
  peak_flops = peak_matmul_flops(a.matmul_n, dtype, a.repeats)
  peak_bw = peak_bandwidth(a.bandwidth_bytes, a.repeats)
  rows = [{'what': f'peak: {a.matmul_n}^3 matmul {a.dtype} / elementwise pass',
           'batch': 0, 'ms': float('nan'), 'images_per_s': float('nan'),
           'tflops': peak_flops / 1e12, 'gbytes_per_s': peak_bw / 1e9, 'intensity': float('nan'),
           'bound_ms': float('nan'), 'roofline_fraction': 1.0, 'memory_gb': float('nan')}]

  c = config_module.get_config(a.config)
  c.model.dtype = a.dtype
  c.model.impl = a.impl
  c.augment = None  # the network's cost, as the PyTorch comparison measures it
  trainer = train.make_trainer(c, 100, derive_uv_assets(procedural_face_model(),
                                                        c.model.resolution))
  res = c.model.resolution

  # Inference: prepared kernels, batch-1 latency and batched throughput.
  variables = jax.jit(lambda k: init_variables(trainer.model, k))(jax.random.key(0))
  prepare, forward = inference_fn(trainer.model)  # as the predictor runs it
  variables = prepare(variables)
  fwd = jax.jit(forward)
  for batch in (1, a.batch):
    x = jax.random.uniform(jax.random.key(1), (batch, res, res, 3)) * 255
    compiled = fwd.lower(variables, x).compile()
    seconds = _timed(compiled, (variables, x), a.repeats)
    flops, nbytes = _cost(compiled)
    rows.append({'what': 'inference latency' if batch == 1 else 'inference', 'batch': batch,
                 'ms': 1e3 * seconds, 'images_per_s': batch / seconds,
                 **roofline(flops, nbytes, seconds, peak_flops, peak_bw),
                 'memory_gb': _memory_gb(compiled)})

  # Training: the real step (forward, backward, Adam), state donated.
  rng = np.random.RandomState(0)
  for train_batch in [int(b) for b in a.train_batches.split(',')]:
    batch = jax.device_put({
        'image': rng.randint(0, 255, (train_batch, res, res, 3)).astype(np.uint8),
        'position_map': rng.uniform(0, res, (train_batch, res, res, 3)).astype(np.float32)},
        trainer.data_sharding)
    state = trainer.init(jax.random.key(0))
    compiled = trainer.step.lower(state, batch).compile()
    flops, nbytes = _cost(compiled)
    state, m = compiled(state, batch)  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(a.repeats):
      t = time.perf_counter()
      state, m = compiled(state, batch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
    seconds = median(times)
    rows.append({'what': 'train step', 'batch': train_batch, 'ms': 1e3 * seconds,
                 'images_per_s': train_batch / seconds,
                 **roofline(flops, nbytes, seconds, peak_flops, peak_bw),
                 'memory_gb': _memory_gb(compiled)})
    del state, batch, compiled
  print(f"backend: {jax.default_backend()} ({machine()['devices'][0]}), config {a.config}, "
        f'compute dtype {a.dtype}, impl {a.impl}')
  report('roofline', rows, list(rows[0]), a.output)


if __name__ == '__main__':
  runtime.restart_tuned()
  main()
