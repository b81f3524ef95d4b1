"""The entry point and configs as a user runs them (subprocess, repository root)."""

import os
import subprocess
import sys

import pytest

from fixtures import ROOT, config_module, run_launch


@pytest.mark.slow(reason='launch.py subprocess')
def test_summary_of_default_config_prints_official_counts():
  r = run_launch('--config=configs/prnet.py', '--mode=summary')
  assert r.returncode == 0, r.stderr
  assert r.stdout.rstrip().endswith('trainable parameters: 13353618, batch statistics: 11890')
  assert 'Unable to initialize backend' not in r.stderr


@pytest.mark.slow(reason='launch.py subprocess')
def test_config_override_reaches_the_model():
  r = run_launch('--config=configs/prnet.py:small', '--mode=summary', '--config.model.width=8')
  assert r.returncode == 0, r.stderr
  assert 'config variant: small' in r.stdout
  assert '(1, 64, 64, 3)' in r.stdout and 'res0       (1, 32, 32, 16)' in r.stdout


def test_unknown_variant_is_rejected_with_the_choices():
  r = run_launch('--config=configs/prnet.py:huge', '--mode=summary')
  assert r.returncode == 2
  assert "Unknown config variant 'huge'" in r.stderr
  assert 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('args,lines', [
    (['--config.batchsize=8'], ["error: config has no field 'batchsize'; did you mean "
                                "'batch_size'?"]),
    (['--config.batch_size=0', '--config.model.resolution=100'],
     ['error: config.batch_size is 0; it must be an integer >= 1',
      'error: config.model.resolution is 100; it must be a positive multiple of 32 (five '
      'stride-2 stages)']),
    (['--config.batch_size=abc'], None),
])
def test_a_config_that_cannot_run_is_one_line_per_problem_and_exit_2(tmp_path, args, lines):
  """Before anything is written: the workdir is not even created."""
  r = run_launch('--config=configs/prnet.py:small', f'--workdir={tmp_path / "w"}', *args)
  assert r.returncode == 2, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr
  got = r.stderr.strip().splitlines()
  if lines is None:
    assert len(got) == 1 and got[0].startswith('error: ') and 'batch_size' in got[0]
  else:
    assert got == lines
  assert not (tmp_path / 'w').exists()


def test_a_missing_config_file_is_one_line(tmp_path):
  r = run_launch(f'--config={tmp_path}/nope.py', '--mode=summary')
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  assert r.stderr.strip().splitlines() == [
      f'error: --config={tmp_path}/nope.py: [Errno 2] No such file or directory: '
      f"'{tmp_path}/nope.py'"]


@pytest.mark.parametrize('variant,dataset,resolution', [
    ('', 'prnet_300wlp', 256), ('synthetic', 'synthetic_faces', 256),
    ('small', 'synthetic_faces/ict_small', 64), ('ict', 'synthetic_faces/ict_128', 64)])
def test_config_variants(variant, dataset, resolution):
  c = config_module().get_config(variant)
  assert (c.dataset, c.model.resolution) == (dataset, resolution)
  if variant == '':  # the paper's recipe
    assert (c.batch_size, c.learning_rate, c.lr_decay_every_epochs, c.lr_decay_factor,
            c.weight_decay, c.model.width) == (16, 1e-4, 5, 0.5, 2e-4, 16)


@pytest.mark.slow(reason='launch.py training subprocess')
def test_train_builds_the_synthetic_dataset_on_first_use(tmp_path):
  """The quick start's path: launch.py builds an unbuilt synthetic dataset of the ICT world
  (with worker processes), then trains on it (the library itself only reads built datasets)."""
  args = ['--config=configs/prnet.py:small', f'--workdir={tmp_path / "w"}',
          '--config.dataset=synthetic_faces/ict_tiny', f'--config.data_dir={tmp_path / "data"}',
          '--config.model.width=2', '--config.batch_size=8', '--config.num_train_steps=2',
          '--config.log_every=1', '--config.eval_every=0']
  r = run_launch(*args)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'building synthetic_faces/ict_tiny (first run only)' in r.stdout
  assert 'step 2/2' in r.stdout
  assert (tmp_path / 'data' / 'synthetic_faces' / 'ict_tiny').is_dir()
  assert 'overriding' not in r.stderr  # orbax's handler override is intended, not a warning


def test_without_the_train_extra_launch_says_what_to_install():
  """A core (prediction-only) install lacks the `train` extra: one line naming the missing
  packages and the install command, no traceback."""
  code = ("import runpy, sys; sys.modules['grain'] = sys.modules['optax'] = None; "
          "sys.argv = ['launch.py', '--config=configs/prnet.py:small', '--workdir=unused']; "
          "runpy.run_path('launch.py', run_name='__main__')")
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 1
  assert r.stderr.strip().splitlines() == [
      'error: launch.py needs the `train` extra, which is not installed (missing: optax, grain): '
      'pip install -r requirements.txt, or pip install "prnet-jax[train]". Prediction alone '
      'needs neither: prnet-predict --help'], r.stderr
  assert not os.path.exists(os.path.join(ROOT, 'unused'))
