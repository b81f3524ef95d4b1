"""The entry point and configs as a user runs them (subprocess, repository root)."""

import pytest

from fixtures import config_module, run_launch


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
  assert r.returncode != 0
  assert "Unknown config variant 'huge'" in r.stderr


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
