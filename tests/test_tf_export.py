"""The TFLite and SavedModel exports (prnet_jax.serving.tf_export) compute the JAX forward pass."""

import warnings

import jax
import numpy as np
import pytest

from prnet_jax.nn import checkpoints
from prnet_jax.nn.model import ModelConfig, PRNet, init_variables

tf = pytest.importorskip('tensorflow', reason='the tf extra (requirements-test.txt installs it)')

from prnet_jax.serving import export, tf_export  # noqa: E402
from fixtures import jax_forward, random_variables  # noqa: E402


def assert_close(got, ref, max_pos):
  """Float32 round-off of another kernel library (TF's oneDNN, TFLite's XNNPACK): a layout or
  padding mistake moves whole pixels."""
  err = np.abs(np.asarray(got) - ref)
  assert got.shape == ref.shape and err.max() <= 5e-5 * max_pos and err.mean() <= 1e-6 * max_pos, (
      err.max(), err.mean())


def run_tflite(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
  with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice (ai_edge_litert)
    warnings.simplefilter('ignore')
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
  (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
  assert list(inp['shape_signature']) == list(images.shape) and inp['dtype'] == np.uint8
  interpreter.allocate_tensors()
  interpreter.set_tensor(inp['index'], images)
  interpreter.invoke()
  return interpreter.get_tensor(out['index'])


def test_tf_tflite_and_savedmodel_match_the_jax_forward_on_a_random_network(tmp_path):
  model_config = ModelConfig(resolution=96, width=2)  # 96: odd sides (3 px) at the bottom
  variables = random_variables(model_config, seed=96)
  images = np.random.default_rng(1).integers(0, 256, (3, 96, 96, 3), np.uint8)
  ref = jax_forward(model_config, variables, images)
  assert ref.std() > 1e-3 * model_config.max_pos  # the maps are not constant
  m = model_config.max_pos
  module = tf_export.build(model_config, variables)
  assert_close(module.serve(tf.constant(images))[tf_export.OUTPUT].numpy(), ref, m)
  assert_close(run_tflite(tf_export.to_tflite(module, batch=3), images), ref, m)
  assert_close(run_tflite(tf_export.to_tflite(module), images[2:]), ref[2:], m)  # batch 1
  tf_export.save_saved_model(str(tmp_path / 'sm'), module)
  loaded = tf.saved_model.load(str(tmp_path / 'sm'))
  served = loaded.signatures['serving_default'](images=tf.constant(images))[tf_export.OUTPUT]
  assert_close(served.numpy(), ref, m)


def test_the_cli_exports_the_bundled_model_as_tflite_and_savedmodel(tmp_path, capsys):
  variables, model_config, _ = checkpoints.load_variables(checkpoints.PRETRAINED)
  r = model_config.resolution
  images = np.random.default_rng(0).integers(0, 256, (2, r, r, 3), np.uint8)
  ref = jax_forward(model_config, variables, images)
  out = tmp_path / 'prnet.tflite'
  assert export.main(['--format=tflite', '--tflite_batch=2', f'--output={out}']) == 0
  assert f"input 'images' uint8 (batch, {r}, {r}, 3)" in capsys.readouterr().out
  assert_close(run_tflite(out.read_bytes(), images), ref, model_config.max_pos)
  saved = tmp_path / 'saved'
  (saved / 'stale').mkdir(parents=True)  # an older export at that path is replaced whole
  assert export.main(['--format=savedmodel', f'--output={saved}']) == 0
  assert not (saved / 'stale').exists()
  loaded = tf.saved_model.load(str(saved))
  served = loaded.signatures['serving_default'](images=tf.constant(images))[tf_export.OUTPUT]
  assert_close(served.numpy(), ref, model_config.max_pos)


def test_variables_of_another_architecture_are_refused():
  model_config = ModelConfig(resolution=64, width=2)
  variables = jax.tree.map(np.asarray, init_variables(PRNet.from_config(model_config),
                                                      jax.random.key(0)))
  del variables['params']['deconv3']
  with pytest.raises(ValueError, match=r"not a PRNet of this architecture: layers \['deconv3'\]"):
    tf_export.build(model_config, variables)


def test_a_tflite_batch_below_one_is_one_line(tmp_path, capsys):
  assert export.main(['--format=tflite', '--tflite_batch=0',
                      f'--output={tmp_path / "p.tflite"}']) == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and '--tflite_batch must be at least 1, not 0' in err
  assert not (tmp_path / 'p.tflite').exists()
