"""Training: device-count invariance, multi-host, exact resume after SIGKILL, NaN stop, no data.

Runs that need several (simulated) devices or processes go through tests/train_worker.py in
subprocesses, so each can choose its own device count.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from prnet_jax.nn import checkpoints
from prnet_jax.training import train

from fixtures import ROOT, tiny_config

WORKER = os.path.join(ROOT, 'tests', 'train_worker.py')


def run_worker(*args, timeout=600, env=None):
  r = subprocess.run([sys.executable, WORKER, *map(str, args)], cwd=ROOT, capture_output=True,
                     text=True, timeout=timeout, env=env)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  return r


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


def final_params(workdir):
  variables, _, step = checkpoints.load_variables(os.path.join(workdir, 'checkpoints'))
  return variables, step


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


@pytest.mark.slow(reason='training subprocesses')
def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tiny_dataset, tmp_path):
  steps = 24  # 3 epochs of tiny: the resumed run crosses epoch boundaries
  env = dict(os.environ, CKPT_EVERY='4')
  straight = tmp_path / 'straight'
  run_worker('train', 1, straight, tiny_dataset, steps, env=env)

  interrupted = tmp_path / 'interrupted'
  p = subprocess.Popen([sys.executable, WORKER, 'train', '1', str(interrupted), tiny_dataset,
                        str(steps)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
  ckpts = interrupted / 'checkpoints'
  deadline = time.time() + 300
  while time.time() < deadline:  # kill once a checkpoint at step >= 4 is complete
    done = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if ckpts.exists() else []
    if any(s >= 4 for s in done):
      break
    time.sleep(0.02)
  p.send_signal(signal.SIGKILL)
  p.wait()
  killed_at = max(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert killed_at < steps, 'the run finished before it could be killed'
  r = run_worker('train', 1, interrupted, tiny_dataset, steps, env=env)
  assert 'resumed from' in r.stdout
  a, _ = final_params(straight)
  b, step = final_params(interrupted)
  assert step == steps
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


def small_config(data_dir, steps):
  c = tiny_config(data_dir, width=2)
  c.batch_size = 8
  c.num_train_steps = steps
  c.log_every = 2
  c.checkpoint_every = 2
  c.eval_every = 4
  return c


@pytest.mark.slow(reason='trains')
def test_run_writes_config_metrics_tensorboard_and_evaluates(tiny_dataset, tmp_path, capsys):
  from prnet_jax.training import train
  last = train.train_and_evaluate(small_config(tiny_dataset, 4), str(tmp_path))
  out = capsys.readouterr().out
  assert 'step 2/4' in out and 'img/s' in out and 'ETA' in out
  assert json.load(open(tmp_path / 'config.json'))['dataset'] == 'synthetic_faces/tiny'
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in rows if 'loss' in r] == [1, 2, 4]
  assert any('eval_nme_2d' in r for r in rows) and 'eval_nme_2d' in last
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'tensorboard'))


@pytest.mark.slow(reason='builds the tiny dataset')
def test_a_failed_start_leaves_the_runs_config_as_it_was(tiny_dataset, tmp_path):
  """config.json is what predict and eval read: a start that fails (here: UV assets that do
  not exist) must not rewrite it."""
  from prnet_jax.training import train
  (tmp_path / 'config.json').write_text('{"uv_assets": "ict"}')
  c = small_config(tiny_dataset, 4)
  c.uv_assets = str(tmp_path / 'no-such-assets')
  with pytest.raises(train.TrainingError, match='no-such-assets'):
    train.train_and_evaluate(c, str(tmp_path))
  assert (tmp_path / 'config.json').read_text() == '{"uv_assets": "ict"}'
  assert not [f for f in os.listdir(tmp_path) if '.tmp-' in f]


@pytest.mark.slow(reason='trains')
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path):
  from prnet_jax.training import train
  c = small_config(tiny_dataset, 8)
  train.train_and_evaluate(c, str(tmp_path))  # a good run to step 8
  c = small_config(tiny_dataset, 16)
  c.learning_rate = 1e30  # the next update overflows float32: the loss is not finite
  with pytest.raises(train.TrainingError, match=r'not finite.*last good checkpoint is .*/8'):
    train.train_and_evaluate(c, str(tmp_path))
  _, step = final_params(tmp_path)
  assert step == 8


def test_default_config_without_data_says_how_to_prepare(tmp_path):
  r = subprocess.run([sys.executable, 'launch.py', '--config=configs/prnet.py',
                      f'--workdir={tmp_path}/w', f'--config.data_dir={tmp_path}/none'],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 1
  assert 'python -m datasets.build prnet_300wlp' in r.stderr
  assert '300W_LP' in r.stderr and 'configs/prnet.py:small' in r.stderr


def test_a_batch_that_does_not_split_over_the_devices_is_one_sentence(tmp_path, monkeypatch):
  monkeypatch.setattr(train.jax, 'device_count', lambda: 8)
  config = tiny_config()
  config.batch_size = 6
  with pytest.raises(train.TrainingError) as e:
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert str(e.value) == ('batch_size 6 is not divisible by the 8 devices (of 1 process(es)); '
                          'pass --config.batch_size=N with N a multiple of 8')
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow(reason='training subprocess')
def test_sigterm_saves_and_stops(tiny_dataset, tmp_path):
  p = subprocess.Popen([sys.executable, WORKER, 'train', '1', str(tmp_path), tiny_dataset, '100000'],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and not (tmp_path / 'metrics.jsonl').exists():
    time.sleep(0.1)
  time.sleep(1.0)
  p.send_signal(signal.SIGTERM)
  out = p.communicate(timeout=300)[0]
  assert p.returncode == 0, out[-2000:]
  assert 'SIGTERM: saved step' in out
  saved = int(out.split('SIGTERM: saved step ')[1].split(',')[0])
  _, step = final_params(tmp_path)
  assert step == saved and 0 < saved < 100000


@pytest.mark.slow(reason='training subprocesses')
def test_broken_newest_checkpoint_falls_back_to_the_previous(tiny_dataset, tmp_path):
  run_worker('train', 1, tmp_path, tiny_dataset, 6)
  newest = tmp_path / 'checkpoints' / '6' / 'train'
  for f in newest.rglob('*'):
    if f.is_file():
      f.write_bytes(b'garbage')
  r = run_worker('train', 1, tmp_path, tiny_dataset, 8)
  assert 'checkpoint' in r.stdout and '/6 could not be restored' in r.stdout
  assert 'resumed from' in r.stdout and r.stdout.split('resumed from ')[1].split()[0].endswith(
      '/4')
  _, step = final_params(tmp_path)
  assert step == 8


@pytest.mark.slow(reason='trains')
def test_a_resume_with_another_model_stops_with_one_sentence_then_start_over(tiny_dataset,
                                                                               tmp_path):
  """A changed network or UV layout is another run: nothing is set aside or written; with
  start_over the old run is kept in previous-*/ and the new one starts at step 0."""
  from prnet_jax.training import train
  train.train_and_evaluate(small_config(tiny_dataset, 4), str(tmp_path))
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  config_before = (tmp_path / 'config.json').read_text()
  c = small_config(tiny_dataset, 6)
  c.model.width = 3
  c.uv_assets = 'ict'
  with pytest.raises(train.TrainingError) as e:
    train.train_and_evaluate(c, str(tmp_path))
  msg = str(e.value)
  assert 'model.width: 2 -> 3' in msg and "uv_assets: 'procedural' -> 'ict'" in msg
  assert 'newest: step 4' in msg and '--start_over' in msg and '\n' not in msg
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before
  assert (tmp_path / 'config.json').read_text() == config_before

  c.uv_assets = 'procedural'  # the tiny world's layout; width stays 3
  train.train_and_evaluate(c, str(tmp_path), start_over=True)
  aside = [d for d in os.listdir(tmp_path) if d.startswith('previous-')]
  assert len(aside) == 1
  assert sorted(os.listdir(tmp_path / aside[0] / 'checkpoints')) == before
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in rows if 'loss' in r] == [1, 2, 4, 6]  # the new run's log only
  variables, step = final_params(tmp_path)
  assert step == 6
  assert jax.tree_util.tree_leaves(variables)[0].shape[-1] in (3, 6, 12, 24, 48)


@pytest.mark.slow(reason='trains')
def test_a_resume_logs_each_step_once_and_two_unreadable_checkpoints_stop_it(tiny_dataset,
                                                                             tmp_path):
  """Steps logged after the newest checkpoint (a kill before its save) are run again on
  resume: metrics.jsonl holds each step once (TensorBoard is told to purge them). Then, when
  the newest two checkpoints both fail to restore, the run stops and nothing is moved."""
  import shutil
  from prnet_jax.training import train
  train.train_and_evaluate(small_config(tiny_dataset, 6), str(tmp_path))
  shutil.rmtree(tmp_path / 'checkpoints' / '6')  # as if killed before step 6 was saved
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 7, "lo')  # and a line cut short
  train.train_and_evaluate(small_config(tiny_dataset, 8), str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in rows if 'loss' in r] == [1, 2, 4, 6, 8]
  assert [r['step'] for r in rows if 'eval_nme_2d' in r] == [1, 4, 8]

  for step in ('8', '6'):
    for f in (tmp_path / 'checkpoints' / step / 'train').rglob('*'):
      if f.is_file():
        f.write_bytes(b'garbage')
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  with pytest.raises(train.TrainingError, match=r'checkpoints 8 and 6 in .* both fail to '
                     r'restore.*nothing was moved'):
    train.train_and_evaluate(small_config(tiny_dataset, 10), str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before


def test_the_step_schedule_warms_up_then_halves_every_few_epochs():
  config = tiny_config()
  config.lr_schedule, config.learning_rate = 'step', 0.4
  config.lr_decay_every_epochs, config.lr_decay_factor = 2, 0.5
  config.warmup_steps = 0
  plain = train.make_schedule(config, steps_per_epoch=10)
  assert [float(plain(k)) for k in (0, 19, 20, 40)] == pytest.approx([0.4, 0.4, 0.2, 0.1])
  config.warmup_steps = 8
  warm = train.make_schedule(config, steps_per_epoch=10)
  assert [float(warm(k)) for k in (0, 4, 8, 19, 20, 40)] == pytest.approx(
      [0.0, 0.2, 0.4, 0.4, 0.2, 0.1])
