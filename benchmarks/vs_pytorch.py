"""PRNet in JAX (ours) against the same network in plain PyTorch, side by side in one process.

  pip install torch==2.13.0        # CPU wheel; optional, benchmarks only
  python benchmarks/vs_pytorch.py                       # full model: train step + inference
  python benchmarks/vs_pytorch.py --what=inference --batches=1,16,64
  python benchmarks/vs_pytorch.py --impl=reference # the straightforward Flax port

Both sides start from the same weights (ours copied into PyTorch) and the script first checks
that they compute the same function (eval-mode outputs agree to float32 round-off) before timing.
Each framework runs in its own worker process (in one process, PyTorch's OpenMP threads and
XLA's thread pool slow each other down: measured +15% on our train step); the driver alternates
them in rounds, so drift of a shared machine hits both; the ratio is taken per round and the
median reported. Each side makes one untimed call before its timed calls in every round: on
the VM this was measured on, memory a process frees while the other works is handed back to
the host, and the first step after a pause paid up to 2 s of page faults (steady training runs
its steps back to back).

* train step: forward + backward + Adam on the weighted position-map loss + L2 on kernels, batch
  --batch, training-mode BatchNorm; ours is the real training code path
  (`prnet_jax.training.train.make_trainer`) with augmentation off (PyTorch has none);
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
import multiprocessing as mp  # noqa: E402

from benchmarks.common import report  # noqa: E402


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def _serve(conn, make_call, extra=None) -> None:
  """A worker's message loop: ('setup', name, images, targets) builds and warms up the call
  `make_call(name, images, targets)`; ('time', name, n) times n calls after one untimed call
  (see the module docstring); other messages are answered by `extra[kind]()`; ('stop',)."""
  calls = {}
  while True:
    msg = conn.recv()
    if msg[0] == 'stop':
      return
    if msg[0] == 'setup':
      _, name, images, targets = msg
      calls[name] = make_call(name, images, targets)
      calls[name]()  # compile + warm up
      conn.send('ready')
    elif msg[0] == 'time':
      calls[msg[1]]()
      conn.send([_timed(calls[msg[1]]) for _ in range(msg[2])])
    else:
      conn.send(extra[msg[0]]())


def _config(a):
  """The benchmark's variant of configs/prnet.py: batch, no augmentation, --impl."""
  import prnet as config_module
  c = config_module.get_config(a.config)
  c.batch_size = a.batch
  c.augment = None
  c.model.impl = a.impl
  return c


def jax_worker(conn, a):
  import jax
  import jax.numpy as jnp

  from prnet_jax.faces.face_model import derive_uv_assets
  from prnet_jax.faces.procedural_face import procedural_face_model
  from prnet_jax.training import train
  c = _config(a)
  res = c.model.resolution
  assets = derive_uv_assets(procedural_face_model(), res)
  trainer = train.make_trainer(c, 100, assets)
  model = trainer.model
  holder = {'state': trainer.init(jax.random.key(0))}
  # A copy: the train step donates (deletes) the state it is given.
  variables = jax.tree_util.tree_map(jnp.copy, {'params': holder['state'].params,
                                                'batch_stats': holder['state'].batch_stats})
  rng = np.random.RandomState(1)
  _, upd = jax.jit(lambda v, x: model.clone(bn_momentum=0.0).apply(
      v, x, train=True, mutable=['batch_stats']))(variables, rng.rand(4, res, res, 3))
  check_vars = {'params': variables['params'], 'batch_stats': upd['batch_stats']}
  check_x = rng.rand(2, res, res, 3).astype(np.float32)
  check_out = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(check_vars, check_x))
  # Inference as prnet_jax's predictor and evaluator run it (kernels prepared once).
  from prnet_jax.nn.model import inference_fn
  prepare, forward = inference_fn(model)
  inf_vars = prepare(variables)
  fwd = jax.jit(forward)
  conn.send({'config': c.to_dict(), 'loss_weights': np.asarray(assets.loss_weights),
             'variables': jax.device_get(variables), 'check_variables': jax.device_get(check_vars),
             'check_x': check_x, 'check_out': check_out, 'jax': jax.__version__})

  def make_call(name, images, targets):
    if name == 'train':
      batch = jax.device_put({'image': images, 'position_map': targets},
                             trainer.data_sharding)

      def step():
        holder['state'], m = trainer.step(holder['state'], batch)
        jax.block_until_ready(m)
      return step
    x = jax.device_put(images)
    return lambda: fwd(inf_vars, x).block_until_ready()

  def compile_times():
    jax.clear_caches()
    fresh = train.make_trainer(c, 100, assets)
    spec = jax.ShapeDtypeStruct((a.batch, res, res, 3), jnp.uint8,
                                sharding=trainer.data_sharding)
    abstract_batch = {'image': spec, 'position_map': jax.ShapeDtypeStruct(
        spec.shape, jnp.float32, sharding=trainer.data_sharding)}
    t = time.perf_counter()
    fresh.step.lower(fresh.abstract_state, abstract_batch).compile()
    step_s = time.perf_counter() - t
    x1 = jax.ShapeDtypeStruct((1, res, res, 3), jnp.float32)
    t = time.perf_counter()
    jax.jit(forward).lower(inf_vars, x1).compile()
    return step_s, time.perf_counter() - t

  _serve(conn, make_call, {'compile': compile_times})


def torch_worker(conn, a):
  try:
    import torch
  except ImportError:
    conn.send('benchmarks/vs_pytorch.py needs PyTorch: pip install torch==2.13.0 (CPU wheel)')
    return
  from benchmarks.torch_prnet import (
    TorchPRNet,
    l2_kernels,
    load_flax_variables,
    nchw,
    weighted_loss,
  )
  torch.manual_seed(0)
  init = conn.recv()
  c = init['config']
  res, width = c['model']['resolution'], c['model']['width']
  check = TorchPRNet(res, width)
  load_flax_variables(check, init['check_variables'])
  check.eval()
  with torch.inference_mode():
    x = nchw(init['check_x'])
    check_out = check(x).numpy().transpose(0, 2, 3, 1)
  tmodel = TorchPRNet(res, width)
  load_flax_variables(tmodel, init['variables'])
  conn.send({'check_out': check_out, 'threads': torch.get_num_threads(),
             'torch': torch.__version__})

  def make_call(name, images, targets):
    if name == 'train':
      tmodel.train()
      opt = torch.optim.Adam(tmodel.parameters(), c['learning_rate'])
      tx, ty = nchw(images, 1 / 255.0), nchw(targets)  # contiguous NCHW (see nchw)
      tw = torch.from_numpy(np.asarray(init['loss_weights'], np.float32))

      def step():
        opt.zero_grad(set_to_none=True)
        loss = weighted_loss(tmodel(tx), ty, tw, tmodel.max_pos) + l2_kernels(
            tmodel, c['weight_decay'])
        loss.backward()
        opt.step()
      return step
    xt = nchw(images)

    def fwd():
      tmodel.eval()
      with torch.inference_mode():
        tmodel(xt)
    return fwd

  _serve(conn, make_call)


def _recv(conn):
  msg = conn.recv()
  if isinstance(msg, str) and msg != 'ready':
    raise SystemExit(msg)
  return msg


def main():
  # Both workers inherit the environment: glibc huge pages for both frameworks, and JAX's
  # XLA:CPU flags (prnet_jax.runtime).
  from prnet_jax import runtime
  runtime.restart_tuned()
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='synthetic', help='variant of configs/prnet.py')
  p.add_argument('--what', default='train,inference,compile')
  p.add_argument('--batch', type=int, default=16, help='train-step batch')
  p.add_argument('--batches', default='1,16', help='inference batches')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--steps', type=int, default=2, help='timed calls per round and side '
                 '(batch-1 inference: 10x as many)')
  p.add_argument('--impl', default='fast')
  p.add_argument('--output', default='benchmarks/results/vs_pytorch.json')
  a = p.parse_args()
  what = set(a.what.split(','))

  ctx = mp.get_context('spawn')
  jconn, jchild = ctx.Pipe()
  tconn, tchild = ctx.Pipe()
  workers = [ctx.Process(target=jax_worker, args=(jchild, a), daemon=True),
             ctx.Process(target=torch_worker, args=(tchild, a), daemon=True)]
  for w in workers:
    w.start()
  try:
    init = _recv(jconn)
    tconn.send(init)
    tinit = _recv(tconn)
    ours, theirs = init['check_out'], tinit['check_out']
    rel = float(np.abs(ours - theirs).max() / max(ours.std(), 1e-6))
    # float32 round-off through 40 BatchNorm layers is ~1e-3 of the output's spread.
    if not rel < 5e-3:
      raise SystemExit(f'JAX and PyTorch networks differ (max |diff| / std = {rel:.3g}); '
                       'refusing to time different functions')
    print(f'same function: max |JAX - PyTorch| / std = {rel:.2e}; PyTorch '
          f'{tinit["torch"]} ({tinit["threads"]} threads), JAX {init["jax"]}, '
          f'{os.cpu_count()} CPUs', flush=True)
    c = init['config']
    res = c['model']['resolution']
    rows = []

    def measure(name, batch, images, targets=None, steps=a.steps):
      for conn in (jconn, tconn):
        conn.send(('setup', name, images, targets))
        _recv(conn)
      js, ts, ratios = [], [], []
      for _ in range(a.rounds):
        jconn.send(('time', name, steps))
        j = statistics.median(jconn.recv())
        tconn.send(('time', name, steps))
        t = statistics.median(tconn.recv())
        js.append(j), ts.append(t), ratios.append(t / j)
      j, t = statistics.median(js), statistics.median(ts)
      rows.append({'what': name.split(':')[0], 'batch': batch, 'jax_s': j, 'torch_s': t,
                   'jax_images_per_s': batch / j, 'torch_images_per_s': batch / t,
                   'speedup_jax_over_torch': statistics.median(ratios)})
      print(rows[-1], flush=True)

    rng = np.random.RandomState(0)
    if 'train' in what:
      images = rng.randint(0, 255, (a.batch, res, res, 3)).astype(np.uint8)
      targets = rng.uniform(0, res, (a.batch, res, res, 3)).astype(np.float32)
      measure('train', a.batch, images, targets)
    if 'inference' in what:
      for bs in [int(b) for b in a.batches.split(',')]:
        x = rng.rand(bs, res, res, 3).astype(np.float32)
        measure(f'inference:{bs}', bs, x, steps=a.steps * (10 if bs == 1 else 1))
    if 'compile' in what:
      jconn.send(('compile',))
      step_s, fwd_s = jconn.recv()
      nan = float('nan')
      for name, batch, sec in (('compile train step', a.batch, step_s),
                               ('compile forward', 1, fwd_s)):
        rows.append({'what': name, 'batch': batch, 'jax_s': sec, 'torch_s': nan,
                     'jax_images_per_s': nan, 'torch_images_per_s': nan,
                     'speedup_jax_over_torch': nan})
  finally:
    for conn in (jconn, tconn):
      try:
        conn.send(('stop',))
      except (BrokenPipeError, OSError):
        pass
    for w in workers:
      w.join(timeout=30)

  for r in rows:
    r.update(config=a.config, impl=a.impl, same_function_rel_diff=rel,
             glibc_tunables=os.environ.get('GLIBC_TUNABLES', ''))
  report('vs_pytorch', rows, ['what', 'batch', 'jax_s', 'torch_s', 'jax_images_per_s',
                              'torch_images_per_s', 'speedup_jax_over_torch'], a.output)


if __name__ == '__main__':
  main()
