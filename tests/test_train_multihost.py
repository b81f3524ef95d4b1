"""Training on several devices and several processes: the same function as on one device.

Each run is a subprocess (tests/train_worker.py) that chooses its own device count; the
multi-host runs are local processes joined by `jax.distributed` on 127.0.0.1.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from fixtures import ROOT, WORKER, final_params, run_worker


@pytest.mark.slow(reason='training subprocesses on 1-8 devices')
def test_same_loss_and_gradients_on_1_and_8_devices_and_fsdp():
  """The first step's loss, BatchNorm statistics and gradients on 1 device, 8 devices (data
  parallel) and 4 devices with parameters sharded over 2 (FSDP) are the same function.

  The float64 model without augmentation: at initialisation, training-mode BatchNorm makes the
  gradients ill-conditioned (a 1e-7 relative change of the input moves some by 5-30%), so
  float32 round-off, which changes with each layout's reduction order, would decide a float32
  comparison; in float64 they agree to ~1e-11. The augmentation (float32 by design) is then
  checked on the forward pass: loss and statistics to float32 round-off."""
  # (devices, fsdp): data parallel on 1 and 8 devices, and parameters sharded over 2 of 4.
  runs = [(1, 1), (8, 1), (4, 2)]
  env = dict(os.environ, PRNET_FLOAT64='1')
  procs = {k: subprocess.Popen([sys.executable, WORKER, 'step', str(k[0]), str(k[1])], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for k in runs}
  results = {}
  for n, p in procs.items():
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    results[n] = json.loads(out.strip().splitlines()[-1])
  ref = results[(1, 1)]
  assert results[(4, 2)]['fsdp_leaves'] > 0 and ref['fsdp_leaves'] == 0
  assert ref['dtype'] == 'float64'
  # Augmentation changes the batch (so the second check is not the first one again).
  assert abs(ref['loss_augmented'] - ref['loss']) > 1e-3 * ref['loss']
  for (n, _), r in results.items():
    assert r['devices'] == n
    assert r['loss'] == pytest.approx(ref['loss'], rel=1e-12)
    np.testing.assert_allclose(r['stats'], ref['stats'], rtol=1e-10)
    np.testing.assert_allclose(r['grad_norms'], ref['grad_norms'], rtol=1e-7)
    for g, gr in zip(r['grads'], ref['grads']):
      np.testing.assert_allclose(g, gr, rtol=1e-7, atol=1e-9 * np.max(np.abs(gr)))
    assert r['loss_augmented'] == pytest.approx(ref['loss_augmented'], rel=1e-5)
    np.testing.assert_allclose(r['stats_augmented'], ref['stats_augmented'], rtol=1e-4)


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


SGD = ['sgd', '0.002']


def train_two_processes(tiny_dataset, workdir, env=None):
  """4 SGD steps (lr 0.002) on 2 processes x 2 devices (jax.distributed on 127.0.0.1, gloo
  collectives, per-process data slices, orbax multi-host checkpoints); returns the metrics rows."""
  address = f'127.0.0.1:{free_port()}'
  procs = [subprocess.Popen([sys.executable, WORKER, 'train', '2', str(workdir), tiny_dataset, '4',
                             address, '2', str(i), *SGD], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert '4 devices on 2 process(es)' in outs[0]
  return [json.loads(l) for l in open(workdir / 'metrics.jsonl')]


@pytest.mark.slow(reason='multi-process training')
def test_two_processes_end_with_the_same_parameters_as_one_process_float64(tiny_dataset, tmp_path):
  """The float64 model: 2 processes x 2 devices end with the same parameters as 1 process x 4
  devices, bitwise. This proves the multi-host code path computes the same training (each
  process its own rows of the global batch, gradients and BatchNorm statistics reduced over all
  devices); in float32 the two differ only by the round-off of another order of the sums."""
  # One checkpoint, the final one (orbax saves dominate such short runs).
  env = dict(os.environ, CKPT_EVERY='4', PRNET_FLOAT64='1')
  single = tmp_path / 'single'
  run_worker('train', '4', single, tiny_dataset, '4', f'127.0.0.1:{free_port()}', '1', '0', *SGD,
             env=env)
  multi = tmp_path / 'multi'
  rows = [[json.loads(l) for l in open(single / 'metrics.jsonl')],
          train_two_processes(tiny_dataset, multi, env)]
  assert [r['step'] for r in rows[0]] == [r['step'] for r in rows[1]] == [1, 2, 4]
  for r0, r1 in zip(*rows):
    assert r1['loss'] == pytest.approx(r0['loss'], rel=1e-12)
  with jax.enable_x64(True):  # float64 checkpoints load as float64
    (a, step_a), (b, step_b) = final_params(single), final_params(multi)
  assert step_a == step_b == 4
  for x, y in zip(jax.tree_util.tree_leaves(a['params']), jax.tree_util.tree_leaves(b['params'])):
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, y)


