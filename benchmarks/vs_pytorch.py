"""PRNet in JAX (ours) against the same network in plain PyTorch, side by side in one process.

  pip install torch==2.13.0        # CPU wheel; optional, benchmarks only
  python benchmarks/vs_pytorch.py                       # full model: train step + inference
  python benchmarks/vs_pytorch.py --what=inference --batches=1,16,64
  python benchmarks/vs_pytorch.py --conv_impl=reference # the straightforward Flax port

Both sides start from the same weights (ours copied into PyTorch) and the script first checks
that they compute the same function (eval-mode outputs agree to float32 round-off) before timing.
Timing alternates JAX and PyTorch in rounds, so drift of a shared machine hits both; the ratio
is taken per round and the median reported.

* train step: forward + backward + Adam on the weighted position-map loss + L2 on kernels, batch
  --batch, training-mode BatchNorm; ours is the real training code path
  (`prnet_jax.train.make_trainer`) with augmentation off (PyTorch has none);
* inference: eval-mode forward at each of --batches, and batch-1 latency (median of calls);
* compile: lowering + compiling the train step and the batch-1 forward from scratch.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'configs'))
import prnet_jax  # noqa: E402,F401  (sets the XLA CPU flags before JAX starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.common import report  # noqa: E402
import prnet as config_module  # noqa: E402
from prnet_jax import train  # noqa: E402
from prnet_jax.face_model import derive_uv_assets  # noqa: E402
from prnet_jax.procedural_face import procedural_face_model  # noqa: E402

try:
  import torch
except ImportError:
  sys.exit('benchmarks/vs_pytorch.py needs PyTorch: pip install torch==2.13.0 (CPU wheel)')
from benchmarks.torch_prnet import TorchPRNet, l2_kernels, load_flax_variables, weighted_loss  # noqa: E402,E501


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def check_same_function(model, variables, res: int) -> float:
  """Max |ours - PyTorch| / std of eval-mode outputs on random images (raises if too large).

  The BatchNorm statistics are first set from a batch (at initialisation they make the output
  nearly constant, which would hide differences)."""
  rng = np.random.RandomState(1)
  _, upd = jax.jit(lambda v, x: model.clone(bn_momentum=0.0).apply(
      v, x, train=True, mutable=['batch_stats']))(variables, rng.rand(4, res, res, 3))
  variables = {'params': variables['params'], 'batch_stats': upd['batch_stats']}
  tmodel = TorchPRNet(model.resolution, model.width)
  load_flax_variables(tmodel, jax.device_get(variables))
  x = rng.rand(2, res, res, 3).astype(np.float32)
  ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, x))
  tmodel.eval()
  with torch.inference_mode():
    theirs = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  rel = float(np.abs(ours - theirs).max() / max(ours.std(), 1e-6))
  if not rel < 5e-3:  # float32 round-off through 40 BatchNorm layers is ~1e-3
    raise SystemExit(f'JAX and PyTorch networks differ (max |diff| / std = {rel:.3g}); '
                     'refusing to time different functions')
  return rel


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='synthetic', help='variant of configs/prnet.py')
  p.add_argument('--what', default='train,inference,compile')
  p.add_argument('--batch', type=int, default=16, help='train-step batch')
  p.add_argument('--batches', default='1,16', help='inference batches')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--steps', type=int, default=2, help='timed calls per round and side')
  p.add_argument('--conv_impl', default='fast')
  p.add_argument('--output', default='benchmarks/results/vs_pytorch.json')
  a = p.parse_args()
  what = set(a.what.split(','))
  torch.manual_seed(0)

  c = config_module.get_config(a.config)
  c.batch_size = a.batch
  c.augment = None
  c.model.conv_impl = a.conv_impl
  res, width = c.model.resolution, c.model.width
  assets = derive_uv_assets(procedural_face_model(), res)
  trainer = train.make_trainer(c, 100, assets)
  model = trainer.model
  state = trainer.init(jax.random.key(0))
  # A copy: the train step donates (deletes) the state it is given.
  variables = jax.tree_util.tree_map(jnp.copy, {'params': state.params,
                                                'batch_stats': state.batch_stats})
  tmodel = TorchPRNet(res, width)
  load_flax_variables(tmodel, jax.device_get(variables))
  rel = check_same_function(model, variables, res)
  print(f'same function: max |JAX - PyTorch| / std = {rel:.2e}; threads: torch '
        f'{torch.get_num_threads()}, CPU {os.cpu_count()}')
  rows = []

  def add(name, batch, jax_s, torch_s, ratios, unit='images/s'):
    rows.append({'what': name, 'batch': batch, 'jax_s': jax_s, 'torch_s': torch_s,
                 'jax_images_per_s': batch / jax_s, 'torch_images_per_s': batch / torch_s,
                 'speedup_jax_over_torch': statistics.median(ratios)})

  def alternate(jax_call, torch_call):
    jax_call(), torch_call()  # warm-up (compiles JAX)
    js, ts, ratios = [], [], []
    for _ in range(a.rounds):
      j = statistics.median(_timed(jax_call) for _ in range(a.steps))
      t = statistics.median(_timed(torch_call) for _ in range(a.steps))
      js.append(j), ts.append(t), ratios.append(t / j)
    return statistics.median(js), statistics.median(ts), ratios

  if 'train' in what:
    rng = np.random.RandomState(0)
    images = rng.randint(0, 255, (a.batch, res, res, 3)).astype(np.uint8)
    targets = rng.uniform(0, res, (a.batch, res, res, 3)).astype(np.float32)
    batch = jax.device_put({'image': images, 'position_map': targets}, trainer.data_sharding)
    holder = {'state': state}

    def jax_step():
      holder['state'], m = trainer.step(holder['state'], batch)
      jax.block_until_ready(m)

    tmodel.train()
    opt = torch.optim.Adam(tmodel.parameters(), c.learning_rate)
    tx = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    ty = torch.from_numpy(targets.transpose(0, 3, 1, 2).copy())
    tw = torch.from_numpy(np.asarray(assets.loss_weights, np.float32))

    def torch_step():
      opt.zero_grad(set_to_none=True)
      loss = weighted_loss(tmodel(tx), ty, tw, tmodel.max_pos) + l2_kernels(tmodel,
                                                                           c.weight_decay)
      loss.backward()
      opt.step()

    add('train step', a.batch, *alternate(jax_step, torch_step))

  if 'inference' in what:
    tmodel.eval()
    fwd = jax.jit(lambda v, x: model.apply(v, x))
    for bs in [int(b) for b in a.batches.split(',')]:
      x = np.random.RandomState(2).rand(bs, res, res, 3).astype(np.float32)
      xj, xt = jax.device_put(x), torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

      def torch_fwd():
        with torch.inference_mode():
          tmodel(xt)

      add('inference', bs, *alternate(lambda: fwd(variables, xj).block_until_ready(),
                                      torch_fwd))

  if 'compile' in what:
    jax.clear_caches()
    fresh = train.make_trainer(c, 100, assets)
    abstract_batch = {
        'image': jax.ShapeDtypeStruct((a.batch, res, res, 3), jnp.uint8,
                                      sharding=trainer.data_sharding),
        'position_map': jax.ShapeDtypeStruct((a.batch, res, res, 3), jnp.float32,
                                             sharding=trainer.data_sharding)}
    t = time.perf_counter()
    fresh.step.lower(fresh.abstract_state, abstract_batch).compile()
    step_s = time.perf_counter() - t
    x1 = jax.ShapeDtypeStruct((1, res, res, 3), jnp.float32)
    t = time.perf_counter()
    jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x1).compile()
    fwd_s = time.perf_counter() - t
    rows.append({'what': 'compile train step', 'batch': a.batch, 'jax_s': step_s,
                 'torch_s': float('nan'), 'jax_images_per_s': float('nan'),
                 'torch_images_per_s': float('nan'), 'speedup_jax_over_torch': float('nan')})
    rows.append({'what': 'compile forward', 'batch': 1, 'jax_s': fwd_s,
                 'torch_s': float('nan'), 'jax_images_per_s': float('nan'),
                 'torch_images_per_s': float('nan'), 'speedup_jax_over_torch': float('nan')})

  for r in rows:
    r.update(config=a.config, conv_impl=a.conv_impl, same_function_rel_diff=rel,
             xla_flags=os.environ.get('XLA_FLAGS', ''))
  report('vs_pytorch', rows, ['what', 'batch', 'jax_s', 'torch_s', 'jax_images_per_s',
                              'torch_images_per_s', 'speedup_jax_over_torch'], a.output)


if __name__ == '__main__':
  main()
