"""Checkpoints of model variables: exact round trip, newest step, clear errors."""

import os

import jax
import numpy as np
import pytest

from prnet_jax.nn import checkpoints
from prnet_jax.nn.model import ModelConfig


def fake_variables(seed):
  rng = np.random.RandomState(seed)
  return {'params': {'conv0': {'conv': {'kernel': rng.randn(4, 4, 3, 8).astype(np.float32)}}},
          'batch_stats': {'conv0': {'bn': {'mean': rng.randn(8).astype(np.float32),
                                           'var': rng.rand(8).astype(np.float32)}}}}


def test_round_trip_and_newest_step(tmp_path):
  cfg = ModelConfig(64, 4, 'bfloat16')
  checkpoints.save_variables(str(tmp_path), fake_variables(0), cfg, step=3)
  checkpoints.save_variables(str(tmp_path), fake_variables(1), cfg, step=7)
  variables, config, step = checkpoints.load_variables(str(tmp_path))
  assert (config, step) == (cfg, 7)
  expected = fake_variables(1)
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(expected)
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(expected)):
    assert isinstance(a, np.ndarray)
    np.testing.assert_array_equal(a, b)
  old, _, step = checkpoints.load_variables(str(tmp_path), step=3)
  assert step == 3
  np.testing.assert_array_equal(old['params']['conv0']['conv']['kernel'],
                                fake_variables(0)['params']['conv0']['conv']['kernel'])


def test_saving_over_a_step_swaps_it_in_only_when_complete(tmp_path, monkeypatch):
  cfg = ModelConfig(64, 4)
  checkpoints.save_variables(str(tmp_path), fake_variables(0), cfg, step=0)
  checkpoints.save_variables(str(tmp_path), fake_variables(1), cfg, step=0)  # replaces it
  got, _, _ = checkpoints.load_variables(str(tmp_path))
  np.testing.assert_array_equal(got['params']['conv0']['conv']['kernel'],
                                fake_variables(1)['params']['conv0']['conv']['kernel'])
  assert sorted(os.listdir(tmp_path)) == ['0']

  import orbax.checkpoint as ocp
  def fail(*args, **kwargs):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(ocp.CheckpointManager, 'save', fail)
  with pytest.raises(OSError, match='No space left'):
    checkpoints.save_variables(str(tmp_path), fake_variables(2), cfg, step=0)
  got, _, _ = checkpoints.load_variables(str(tmp_path))
  np.testing.assert_array_equal(got['params']['conv0']['conv']['kernel'],
                                fake_variables(1)['params']['conv0']['conv']['kernel'])
  assert sorted(os.listdir(tmp_path)) == ['0']


def test_errors_name_the_path(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match=f'{tmp_path}/nope: checkpoint directory'
                                                         ' does not exist'):
    checkpoints.load_variables(str(tmp_path / 'nope'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(checkpoints.CheckpointError, match='empty: no checkpoint steps found'):
    checkpoints.load_variables(str(tmp_path / 'empty'))
  checkpoints.save_variables(str(tmp_path / 'c'), fake_variables(0), ModelConfig(), step=1)
  with pytest.raises(checkpoints.CheckpointError, match=r'no step 5; available: \[1\]'):
    checkpoints.load_variables(str(tmp_path / 'c'), step=5)


def test_damaged_checkpoint_is_reported_with_its_path(tmp_path):
  import shutil
  checkpoints.save_variables(str(tmp_path), fake_variables(0), ModelConfig(), step=2)
  shutil.rmtree(tmp_path / '2' / 'variables')
  with pytest.raises(checkpoints.CheckpointError,
                     match=f'{tmp_path}/2: cannot restore model variables'):
    checkpoints.load_variables(str(tmp_path))


def test_a_runs_workdir_loads_like_its_checkpoints_folder(tmp_path):
  """Users pass the folder they gave `launch.py --workdir`; training writes WORKDIR/checkpoints."""
  checkpoints.save_variables(str(tmp_path / 'run' / 'checkpoints'), fake_variables(2),
                               ModelConfig(), step=4)
  (tmp_path / 'run' / 'eval').mkdir()  # other things a run writes beside its checkpoints
  assert checkpoints.resolve_directory(str(tmp_path / 'run')) == str(
      tmp_path / 'run' / 'checkpoints')
  from_workdir = checkpoints.load_variables(str(tmp_path / 'run'))
  from_folder = checkpoints.load_variables(str(tmp_path / 'run' / 'checkpoints'))
  assert from_workdir[2] == from_folder[2] == 4
  np.testing.assert_array_equal(from_workdir[0]['params']['conv0']['conv']['kernel'],
                                fake_variables(2)['params']['conv0']['conv']['kernel'])
  # A workdir without checkpoints still names the folder it looked in.
  (tmp_path / 'fresh' / 'checkpoints').mkdir(parents=True)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"fresh/checkpoints: no checkpoint steps found.*workdir"):
    checkpoints.load_variables(str(tmp_path / 'fresh'))


def test_compact_checkpoint_round_trip_in_float16(tmp_path):
  cfg = ModelConfig(64, 4, 'float32')
  v = fake_variables(2)
  v['batch_stats']['conv0']['bn']['var'][0] = 1e6  # beyond float16: kept in float32
  path = checkpoints.save_compact(str(tmp_path / 'm.npz'), v, cfg, 1500, {'uv_assets': 'ict'})
  variables, config, step = checkpoints.load_variables(path)
  assert (config, step) == (cfg, 1500)
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(v)
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(v)):
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # float16: 11 significant bits
  assert variables['batch_stats']['conv0']['bn']['var'][0] == 1e6
  with np.load(path) as f:
    assert f['params/conv0/conv/kernel'].dtype == np.float16
  assert checkpoints.run_config(path) == {'uv_assets': 'ict'}
  with pytest.raises(checkpoints.CheckpointError, match='holds step 1500 only'):
    checkpoints.load_variables(path, step=3)
  bad = tmp_path / 'bad.npz'
  bad.write_bytes(b'not a zip')
  with pytest.raises(checkpoints.CheckpointError, match='bad.npz'):
    checkpoints.load_variables(str(bad))


def test_pretrained_names_the_bundled_model():
  variables, config, step = checkpoints.load_variables(checkpoints.PRETRAINED)
  run = checkpoints.run_config(checkpoints.PRETRAINED)
  assert run['uv_assets'] == 'ict' and run['dataset'] == 'synthetic_faces/ict_128'
  assert (config.resolution, config.width) == (run['model']['resolution'], run['model']['width'])
  assert 0 < step <= run['num_train_steps']  # README: which step of the run it is
  assert os.path.getsize(checkpoints.PRETRAINED_FILE) < 10e6
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(variables))
