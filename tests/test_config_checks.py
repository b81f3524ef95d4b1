"""Config checks (prnet_jax.training.config_checks) and run identity (run_identity): pure."""

import pytest

from prnet_jax.training import config_checks, run_identity

from fixtures import config_module


@pytest.mark.parametrize('variant', config_module().VARIANTS)
def test_every_shipped_variant_passes(variant):
  assert config_checks.bad_values(config_module().get_config(variant)) == []


def test_unknown_fields_name_the_nearest_known_one():
  c = config_module().get_config('small')
  assert config_checks.unknown_fields(c, ['batch_size', 'model.width', 'augment.scale']) == []
  assert config_checks.unknown_fields(c, ['batchsize', 'model.widht', 'zzzzzz']) == [
      "config has no field 'batchsize'; did you mean 'batch_size'?",
      "config has no field 'model.widht'; did you mean 'model.width'?",
      "config has no field 'zzzzzz'"]


@pytest.mark.parametrize('path,value,fragment', [
    ('batch_size', -1, 'config.batch_size is -1; it must be an integer >= 1'),
    ('warmup_steps', -5, 'config.warmup_steps is -5; it must be an integer >= 0'),
    ('learning_rate', 0.0, 'config.learning_rate is 0.0; it must be > 0'),
    ('learning_rate', float('nan'), 'config.learning_rate is nan'),
    ('model.resolution', 48, 'config.model.resolution is 48'),
    ('model.dtype', 'float8', "config.model.dtype is 'float8'; choose one of float32"),
    ('optimizer', 'adamw', "config.optimizer is 'adamw'; choose one of adam, sgd"),
    ('eval.norm', 'iod', "config.eval.norm is 'iod'"),
    ('augment.scale', (1.2, 0.9), 'config.augment.scale is (1.2, 0.9)'),
    ('augment.translation', 1.5, 'config.augment.translation is 1.5'),
    ('keep_checkpoints', 0, 'config.keep_checkpoints is 0'),
    ('mesh.fsdp', 0, 'config.mesh.fsdp is 0'),
])
def test_impossible_values_are_named(path, value, fragment):
  c = config_module().get_config('ict')
  c.unlock()
  node = c
  *parents, leaf = path.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  problems = config_checks.bad_values(c)
  assert len(problems) == 1 and fragment in problems[0], problems


def test_no_length_at_all_is_named():
  c = config_module().get_config('small')
  c.num_train_steps, c.num_epochs = 0, 0
  assert config_checks.bad_values(c) == [
      'config.num_train_steps and config.num_epochs are both 0; set one of them']


def test_override_paths_from_argv():
  argv = ['launch.py', '--config=configs/prnet.py:small', '--config.batch_size=8',
          '--config.model.width', '4', '--configx=1', '--', '--config.after=1']
  assert config_checks.override_paths(argv) == ['batch_size', 'model.width']


def test_run_identity_names_what_differs_and_ignores_dtype_and_impl():
  saved = dict(resolution=64, width=8, dtype='float32', bn_momentum=0.99, impl='fast')
  same = dict(saved, dtype='bfloat16', impl='reference')
  assert run_identity.differences(saved, same, {'uv_assets': 'ict'}, {'uv_assets': 'ict'}) == []
  diffs = run_identity.differences(saved, dict(saved, width=4), {'uv_assets': 'ict',
                                   'dataset': 'a'}, {'uv_assets': 'procedural', 'dataset': 'a'})
  assert diffs == ['model.width: 8 -> 4', "uv_assets: 'ict' -> 'procedural'"]
  # What was not recorded is not compared.
  assert run_identity.differences(None, saved, None, {'uv_assets': 'x'}) == []
