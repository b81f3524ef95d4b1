"""Checkpoint saves of the full training state: how long each blocks the training loop.

  python benchmarks/checkpoint_save.py                  # 8 CPU devices, full model
  python benchmarks/checkpoint_save.py --devices=1 --config=small

Each variant runs in its own subprocess (orbax's array handler is process-wide): `orbax default`
(replica-parallel for every array) and `prnet_jax` (`checkpointer.write_small_arrays_from_one_replica`,
what training uses). Reports, per save, the time `CheckpointManager.save` blocks the caller
(the async write continues in the background) and the time until the write is finished.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'configs'))


def worker(config_name: str, devices: int, variant: str, saves: int, directory: str) -> dict:
  import jax
  jax.config.update('jax_num_cpu_devices', devices)

  import prnet as config_module

  from prnet_jax.faces.catalog import uv_assets_for
  from prnet_jax.nn.model import ModelConfig
  from prnet_jax.training import checkpointer, train
  c = config_module.get_config(config_name)
  trainer = train.make_trainer(c, 100, uv_assets_for('procedural', c.model.resolution))
  state = jax.block_until_ready(trainer.init(jax.random.key(0)))
  min_bytes = checkpointer.REPLICA_PARALLEL_MIN_BYTES if variant == 'prnet_jax' else None
  ckpt = checkpointer.TrainCheckpointer(directory, ModelConfig.from_mapping(dict(c.model)),
                                         keep=2, replica_parallel_min_bytes=min_bytes)
  blocking, total = [], []
  for _ in range(saves):
    state = state.replace(step=state.step + 1)
    t = time.perf_counter()
    ckpt.save(state, {'position': 0})
    blocking.append(time.perf_counter() - t)
    ckpt.wait_until_finished()
    total.append(time.perf_counter() - t)
  ckpt.close()
  return {'variant': variant, 'config': config_name, 'devices': jax.device_count(),
          'arrays': len(jax.tree_util.tree_leaves(state)),
          'first_blocking_s': blocking[0], 'first_total_s': total[0],
          'later_blocking_s': min(blocking[1:] or blocking),
          'later_total_s': min(total[1:] or total)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='synthetic', help='variant of configs/prnet.py')
  p.add_argument('--devices', type=int, default=8, help='CPU devices (simulated)')
  p.add_argument('--saves', type=int, default=3)
  p.add_argument('--output', default='benchmarks/results/checkpoint_save.json')
  p.add_argument('--worker', default='', help=argparse.SUPPRESS)
  p.add_argument('--directory', default='', help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    print(json.dumps(worker(a.config, a.devices, a.worker, a.saves, a.directory)))
    return
  import tempfile

  from benchmarks.common import report
  rows = []
  for variant in ('orbax default', 'prnet_jax'):
    with tempfile.TemporaryDirectory() as d:
      r = subprocess.run([sys.executable, os.path.abspath(__file__), f'--worker={variant}',
                          f'--config={a.config}', f'--devices={a.devices}',
                          f'--saves={a.saves}', f'--directory={d}/checkpoints'],
                         capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
      sys.exit(f'checkpoint_save worker ({variant}) failed:\n{r.stderr[-3000:]}')
    rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
  report('checkpoint_save', rows, list(rows[0]), a.output)


if __name__ == '__main__':
  main()
