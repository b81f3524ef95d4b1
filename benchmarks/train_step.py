"""Train-step throughput of the real training code path (`prnet_jax.training.train.make_trainer`).

  python benchmarks/train_step.py                 # full model, batch 16, float32
  python benchmarks/train_step.py --config=small  # the CPU demo model
  python benchmarks/train_step.py --impl=reference --no_augment   # the straightforward port

Peak memory: XLA's own accounting of the compiled step (arguments + outputs + temporaries) and
the process's peak resident set (on CPU the device memory is host memory).

Reports compile time (first call) and images/s over --steps steps (median of per-step times).
"""

import argparse
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'configs'))
import jax  # noqa: E402
import numpy as np  # noqa: E402
import prnet as config_module  # noqa: E402

from benchmarks.common import median, report  # noqa: E402
from prnet_jax import runtime  # noqa: E402  (XLA:CPU settings: runtime.restart_tuned)
from prnet_jax.faces.face_model import derive_uv_assets  # noqa: E402
from prnet_jax.faces.procedural_face import procedural_face_model  # noqa: E402
from prnet_jax.training import train  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='synthetic', help='variant of configs/prnet.py')
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--impl', default='fast')
  p.add_argument('--width', type=int, default=0, help='> 0: override the model width')
  p.add_argument('--resolution', type=int, default=0, help='> 0: override the input size')
  p.add_argument('--no_augment', action='store_true', help='time the step without augmentation')
  p.add_argument('--output', default='benchmarks/results/train_step.json')
  a = p.parse_args()
  c = config_module.get_config(a.config)
  c.batch_size = a.batch
  c.model.dtype = a.dtype
  c.model.impl = a.impl
  if a.width:
    c.model.width = a.width
  if a.resolution:
    c.model.resolution = a.resolution
  if a.no_augment:
    c.augment = None
  res = c.model.resolution
  trainer = train.make_trainer(c, 100, derive_uv_assets(procedural_face_model(), res))
  rng = np.random.RandomState(0)
  batch = jax.device_put({
      'image': rng.randint(0, 255, (a.batch, res, res, 3)).astype(np.uint8),
      'position_map': rng.uniform(0, res, (a.batch, res, res, 3)).astype(np.float32)},
      trainer.data_sharding)
  t = time.perf_counter()
  state = jax.block_until_ready(trainer.init(jax.random.key(0)))
  init_s = time.perf_counter() - t  # compile + run of the sharded initialisation
  t = time.perf_counter()
  state, m = trainer.step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(a.steps):
    t = time.perf_counter()
    state, m = trainer.step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  mem = trainer.step.lower(state, batch).compile().memory_analysis()
  xla_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               - mem.alias_size_in_bytes) if mem is not None else float('nan')
  row = {'config': a.config, 'impl': a.impl, 'augment': not a.no_augment, 'resolution': res,
         'width': c.model.width, 'dtype': a.dtype, 'batch': a.batch,
         'devices': jax.device_count(), 'init_s': init_s, 'first_step_s': compile_s,
         'step_s': median(times),
         'images_per_s': a.batch / median(times), 'xla_peak_gib': xla_bytes / 2**30,
         'max_rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
  report('train_step', [row], list(row), a.output)


if __name__ == '__main__':
  runtime.restart_tuned()
  main()
