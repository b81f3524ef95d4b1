"""Training: device-count invariance, multi-host, exact resume after SIGKILL, NaN stop, no data.

Runs that need several (simulated) devices or processes go through tests/train_worker.py in
subprocesses, so each can choose its own device count.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from prnet_jax.training import train

from fixtures import ROOT, WORKER, final_params, run_worker, tiny_config

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
