"""The ONNX export (prnet_jax.serving.onnx_export) computes the JAX forward pass."""

import jax
import numpy as np
import pytest

from prnet_jax.nn import checkpoints
from prnet_jax.nn.model import ModelConfig, PRNet, init_variables

onnx = pytest.importorskip('onnx', reason='the onnx extra (requirements-test.txt installs it)')
ort = pytest.importorskip('onnxruntime', reason='the onnx extra')

from prnet_jax.serving import export, onnx_export  # noqa: E402
from fixtures import jax_forward, random_variables  # noqa: E402


def run_onnx(proto, images):
  session = ort.InferenceSession(proto.SerializeToString(), providers=['CPUExecutionProvider'])
  return session.run(None, {onnx_export.INPUT: images})[0]


@pytest.mark.parametrize('resolution,width', [(96, 2)])  # 96: odd sides (3 px) at the bottom
def test_onnx_matches_the_jax_forward_on_a_random_network(resolution, width):
  model_config = ModelConfig(resolution=resolution, width=width)
  variables = random_variables(model_config, seed=resolution)
  images = np.random.default_rng(1).integers(0, 256, (3, resolution, resolution, 3), np.uint8)
  proto = onnx_export.build(model_config, variables)
  got, ref = run_onnx(proto, images), jax_forward(model_config, variables, images)
  assert got.shape == ref.shape == (3, resolution, resolution, 3) and got.dtype == np.float32
  assert np.abs(got - ref).max() <= 1e-5 * model_config.max_pos, np.abs(got - ref).max()
  assert ref.std() > 1e-3 * model_config.max_pos  # the maps are not constant
  # Any batch size: one image alone gives the same map as within the batch.
  np.testing.assert_allclose(run_onnx(proto, images[1:2])[0], got[1], atol=1e-4)


def test_the_cli_exports_the_bundled_model_and_onnxruntime_reproduces_it(tmp_path, capsys):
  out = str(tmp_path / 'prnet.onnx')
  assert export.main(['--format=onnx', f'--output={out}']) == 0
  assert 'ONNX opset 17' in capsys.readouterr().out
  variables, model_config, _ = checkpoints.load_variables(checkpoints.PRETRAINED)
  model = onnx.load(out)
  onnx.checker.check_model(model)
  r = model_config.resolution
  images = np.random.default_rng(0).integers(0, 256, (2, r, r, 3), np.uint8)
  ref = jax_forward(model_config, variables, images)
  assert np.abs(run_onnx(model, images) - ref).max() <= 1e-5 * model_config.max_pos


def test_variables_of_another_architecture_are_refused():
  model_config = ModelConfig(resolution=64, width=2)
  variables = jax.tree.map(np.asarray, init_variables(PRNet.from_config(model_config),
                                                      jax.random.key(0)))
  del variables['params']['res9']
  with pytest.raises(ValueError, match=r"not a PRNet of this architecture: layers \['res9'\]"):
    onnx_export.build(model_config, variables)


def test_the_cli_names_a_checkpoint_of_another_architecture_in_one_line(tmp_path, capsys):
  model_config = ModelConfig(resolution=64, width=2)
  variables = jax.tree.map(np.asarray, init_variables(PRNet.from_config(model_config),
                                                      jax.random.key(0)))
  del variables['params']['res9']
  path = checkpoints.save_compact(str(tmp_path / 'm.npz'), variables, model_config, 1)
  out = tmp_path / 'm.onnx'
  assert export.main([f'--checkpoint={path}', '--format=onnx', f'--output={out}']) == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith(f'error: {path}: ')
  assert "not a PRNet of this architecture: layers ['res9']" in err
  assert not out.exists()
