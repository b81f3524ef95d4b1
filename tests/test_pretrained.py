"""Packaging a training run as a compact checkpoint (how the bundled model is made)."""

import json

import jax
import numpy as np

from prnet_jax.nn import checkpoints
from prnet_jax.nn.model import ModelConfig, PRNet, init_variables
from prnet_jax.training import pretrained


def test_package_carries_the_newest_weights_and_the_runs_config(tmp_path, capsys):
  cfg = ModelConfig(64, 4, 'float32')
  model = PRNet.from_config(cfg)
  run = tmp_path / 'run'
  old = init_variables(model, jax.random.key(0))
  new = init_variables(model, jax.random.key(1))
  checkpoints.save_variables(str(run / 'checkpoints'), old, cfg, step=100)
  checkpoints.save_variables(str(run / 'checkpoints'), new, cfg, step=200)
  (run / 'config.json').write_text(json.dumps({'uv_assets': 'ict', 'predict_antialias': True}))
  out = tmp_path / 'model.npz'
  assert pretrained.main([f'--workdir={run}', f'--output={out}']) == 0
  assert 'MB' in capsys.readouterr().out
  variables, config, step = checkpoints.load_variables(str(out))
  assert (config, step) == (cfg, 200)
  assert checkpoints.run_config(str(out)) == {'uv_assets': 'ict', 'predict_antialias': True}
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(new)):
    np.testing.assert_allclose(a, np.asarray(b), rtol=1e-3, atol=1e-4)
  assert pretrained.main([f'--workdir={run}', f'--output={out}', '--step=100']) == 0
  variables, _, step = checkpoints.load_variables(str(out))
  assert step == 100
  np.testing.assert_allclose(jax.tree_util.tree_leaves(variables)[0],
                             np.asarray(jax.tree_util.tree_leaves(old)[0]), rtol=1e-3, atol=1e-4)
  assert pretrained.main([f'--workdir={run}', f'--output={out}', '--step=150']) == 1
  assert pretrained.main([f'--workdir={tmp_path / "nothing"}', f'--output={out}']) == 1
