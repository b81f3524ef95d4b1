"""Official TF checkpoint -> orbax: names, shapes, and forward parity with a TensorFlow graph.

The TensorFlow graph below is written independently of prnet_jax.nn.model, from the official
predictor.py structure (tf.nn ops, inference-mode BatchNorm), with its own literal layer list.
"""

import os
import re

import jax
import numpy as np
import pytest

from prnet_jax.nn import checkpoints
from prnet_jax.nn.model import PRNet
from prnet_jax.serving import convert_official


def read_official_list(path):
  out = {}
  for line in open(path):
    if line.startswith('#') or not line.strip():
      continue
    name, shape = line.split(' ', 1)
    out[name] = tuple(int(v) for v in re.findall(r'\d+', shape))
  return out


def test_variable_specs_equal_the_official_checkpoint_list(official_variables_file):
  official = read_official_list(official_variables_file)
  assert len(official) == 245
  ours = {name: spec[2] for name, spec in convert_official.variable_specs(PRNet()).items()}
  assert ours == official


# ---------------------------------------------------------------------------------------------
# A TensorFlow reference of resfcn256 (official predictor.py), width 16.
ENCODER = [(32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
           (512, 2), (512, 1)]
DECODER = [(512, 1), (256, 2), (256, 1), (256, 1), (128, 2), (128, 1), (128, 1), (64, 2),
           (64, 1), (64, 1), (32, 2), (32, 1), (16, 2), (16, 1), (3, 1), (3, 1), (3, 1)]


def _scope(prefix, i):
  return prefix if i == 0 else f'{prefix}_{i}'


def tf_resfcn256(tf, x, var, bn_stats=None):
  """Forward of the official graph. `var(name, shape)` returns a tensor. If `bn_stats` is a dict,
  BatchNorm normalises with batch moments and records them there (to calibrate the checkpoint's
  moving statistics so activations stay in a sensible range); otherwise it uses the stored
  moving statistics, as the official inference graph does."""

  def bn(h, scope):
    c = h.shape[-1]
    gamma, beta = var(f'{scope}/BatchNorm/gamma', [c]), var(f'{scope}/BatchNorm/beta', [c])
    if bn_stats is not None:
      mean, variance = tf.nn.moments(h, axes=[0, 1, 2])
      bn_stats[f'{scope}/BatchNorm/moving_mean'] = mean.numpy()
      bn_stats[f'{scope}/BatchNorm/moving_variance'] = variance.numpy()
    else:
      mean = var(f'{scope}/BatchNorm/moving_mean', [c])
      variance = var(f'{scope}/BatchNorm/moving_variance', [c])
    return tf.nn.batch_normalization(h, mean, variance, beta, gamma, 1e-3)

  def conv(h, scope, c, k, s, norm=True, act=tf.nn.relu):
    h = tf.nn.conv2d(h, var(f'{scope}/weights', [k, k, h.shape[-1], c]), s, 'SAME')
    h = bn(h, scope) if norm else h
    return act(h) if act else h

  def deconv(h, scope, c, s, act=tf.nn.relu):
    b, hh, ww, cin = h.shape
    w = var(f'{scope}/weights', [4, 4, c, cin])
    h = tf.nn.conv2d_transpose(h, w, [b, hh * s, ww * s, c], s, 'SAME')
    return act(bn(h, scope))

  h = conv(x, 'resfcn256/Conv', 16, 4, 1)
  for i, (c, s) in enumerate(ENCODER):
    scope = 'resfcn256/' + _scope('resBlock', i)
    shortcut = h
    if s != 1 or h.shape[-1] != c:
      shortcut = conv(h, f'{scope}/shortcut', c, 1, s, norm=False, act=None)
    y = conv(h, f'{scope}/Conv', c // 2, 1, 1)
    y = conv(y, f'{scope}/Conv_1', c // 2, 4, s)
    y = conv(y, f'{scope}/Conv_2', c, 1, 1, norm=False, act=None)
    h = tf.nn.relu(bn(y + shortcut, scope))
  for i, (c, s) in enumerate(DECODER):
    last = i == len(DECODER) - 1
    h = deconv(h, 'resfcn256/' + _scope('Conv2d_transpose', i), c, s,
               act=tf.nn.sigmoid if last else tf.nn.relu)
  return h * 256 * 1.1


def make_official_like_checkpoint(tf, prefix, images, seed=0, extra_slots=True):
  """Writes a TF1-format checkpoint with the official names/shapes and random, calibrated values."""
  rng = np.random.RandomState(seed)
  values = {}

  def random_var(name, shape):
    if name not in values:
      if name.endswith('/weights'):
        fan_in = shape[0] * shape[1] * (shape[3] if 'Conv2d_transpose' in name else shape[2])
        values[name] = (rng.randn(*shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
      elif name.endswith('/gamma'):
        values[name] = rng.uniform(0.7, 1.3, shape).astype(np.float32)
      elif name.endswith('/beta'):
        values[name] = rng.uniform(-0.2, 0.2, shape).astype(np.float32)
      else:
        raise KeyError(name)
    return tf.constant(values[name])

  stats = {}
  tf_resfcn256(tf, tf.constant(images), random_var, bn_stats=stats)
  for name, v in stats.items():  # perturb, so moving stats differ from any batch's moments
    noise = rng.uniform(0.9, 1.1, v.shape)
    values[name] = (v * noise if 'variance' in name else v + 0.1 * noise * np.abs(v)
                    ).astype(np.float32)

  graph = tf.Graph()
  with graph.as_default():
    tf_vars = [tf.compat.v1.Variable(v, name=n) for n, v in values.items()]
    if extra_slots:  # the real checkpoint also carries Adam slots and counters
      tf_vars.append(tf.compat.v1.Variable(values['resfcn256/Conv/weights'],
                                           name='resfcn256/Conv/weights/Adam'))
      tf_vars.append(tf.compat.v1.Variable(0.9, name='beta1_power'))
    saver = tf.compat.v1.train.Saver(tf_vars)
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      saver.save(sess, prefix, write_meta_graph=False)
  return values


@pytest.fixture(scope='module')
def tf():
  return pytest.importorskip('tensorflow', reason="TensorFlow is the tests' reference (pip "
                                                  'install -r requirements-test.txt); CI has it')


@pytest.fixture(scope='module')
def official_like(tf, tmp_path_factory):
  root = tmp_path_factory.mktemp('tfckpt')
  prefix = str(root / '256_256_resfcn256_weight')
  images = np.random.RandomState(1).uniform(0, 1, (2, 256, 256, 3)).astype(np.float32)
  values = make_official_like_checkpoint(tf, prefix, images)
  return prefix, values, images


@pytest.mark.slow(reason='TensorFlow graph')
def test_reference_graph_uses_the_official_variables(official_like, official_variables_file):
  _, values, _ = official_like
  assert {n: v.shape for n, v in values.items()} == read_official_list(official_variables_file)


def test_tf_parity_of_converted_checkpoint(tf, official_like, tmp_path, monkeypatch):
  """Converted without TensorFlow (unimportable here), the weights are the TF-written values
  bit for bit and the network's outputs equal TensorFlow's forward. The result records the
  'official' UV assets: the predictor reads its maps with them without flags, and refuses
  another layout."""
  import sys

  from prnet_jax.faces.catalog import uv_assets_for
  from prnet_jax.serving import inference
  prefix, values, images = official_like
  assert len(values) == 245

  monkeypatch.setitem(sys.modules, 'tensorflow', None)  # any TensorFlow import now fails
  assert convert_official.main([f'--checkpoint={prefix}', f'--output={tmp_path}/ckpt']) == 0
  monkeypatch.undo()
  variables, config, step = checkpoints.load_variables(str(tmp_path / 'ckpt'))
  assert (config.resolution, config.width, step) == (256, 16, 0)
  for name, (collection, path, _) in convert_official.variable_specs(
      PRNet.from_config(config)).items():
    leaf = variables[collection]
    for key in path:
      leaf = leaf[key]
    assert leaf.tobytes() == values[name].astype(np.float32).tobytes(), name
  assert checkpoints.run_config(str(tmp_path / 'ckpt'))['uv_assets'] == 'official'
  predictor = inference.Predictor.from_checkpoint(str(tmp_path / 'ckpt'))
  np.testing.assert_array_equal(predictor.assets.kpt_uv, uv_assets_for('official', 256).kpt_uv)
  with pytest.raises(inference.PredictError, match="trained with UV assets 'official'"):
    inference.Predictor.from_checkpoint(str(tmp_path / 'ckpt'), 'ict')

  test_images = np.random.RandomState(2).uniform(0, 1, (2, 256, 256, 3)).astype(np.float32)
  ref = tf_resfcn256(tf, tf.constant(test_images), lambda n, s: tf.constant(values[n])).numpy()
  model = PRNet.from_config(config)
  ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, test_images))

  # The comparison must be able to fail: outputs are spread, not saturated by the sigmoid.
  frac_unsaturated = np.mean((ref > 0.05 * 281.6) & (ref < 0.95 * 281.6))
  assert frac_unsaturated > 0.5, frac_unsaturated
  assert ref.std() > 5.0
  rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
  assert rel < 1e-4, rel
  # Element-wise too: float32 rounding through 27 layers, nothing structural.
  assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()

  # And it can fail: a plain-correlation port (kernels not flipped) is far off.
  flipped = jax.tree_util.tree_map_with_path(
      lambda p, x: x[::-1, ::-1] if 'deconv' in str(p[0]) and x.ndim == 4 else x,
      variables['params'])
  wrong = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      {**variables, 'params': flipped}, test_images)
  assert np.linalg.norm(np.asarray(wrong) - ref) / np.linalg.norm(ref) > 1e-2


def test_converter_accepts_the_checkpoint_folder(tf, official_like, tmp_path):
  prefix, values, _ = official_like
  path = convert_official.convert_checkpoint(os.path.dirname(prefix), str(tmp_path / 'out'))
  variables, _, _ = checkpoints.load_variables(os.path.dirname(path))
  np.testing.assert_array_equal(variables['params']['deconv3']['conv']['kernel'],
                                values['resfcn256/Conv2d_transpose_3/weights'])
  np.testing.assert_array_equal(variables['batch_stats']['res4']['conv2']['bn']['var'],
                                values['resfcn256/resBlock_4/Conv_1/BatchNorm/moving_variance'])


def test_missing_checkpoint_gives_clear_error(tmp_path, capsys):
  code = convert_official.main([f'--checkpoint={tmp_path}/nothing', f'--output={tmp_path}/o'])
  assert code == 1
  err = capsys.readouterr().err
  assert f'{tmp_path}/nothing: no TF checkpoint here' in err


def test_missing_and_misshapen_variables_are_named():
  model = PRNet()
  specs = convert_official.variable_specs(model)
  available = {n: s[2] for n, s in specs.items()}
  zeros = lambda n: np.zeros(available[n], np.float32)

  partial = dict(available)
  del partial['resfcn256/resBlock_7/Conv_2/weights']
  with pytest.raises(convert_official.ConversionError,
                     match=r"1 PRNet variables are missing.*resBlock_7/Conv_2/weights"):
    convert_official.convert(zeros, partial, model)

  wrong = dict(available)
  wrong['resfcn256/Conv2d_transpose_16/weights'] = (4, 4, 3, 4)
  with pytest.raises(convert_official.ConversionError,
                     match=r'Conv2d_transpose_16/weights: checkpoint shape \(4, 4, 3, 4\)'):
    convert_official.convert(lambda n: np.zeros(wrong[n], np.float32), wrong, model)

  def nan_tensor(n):
    v = zeros(n)
    return v * np.nan if n == 'resfcn256/Conv/BatchNorm/gamma' else v
  with pytest.raises(convert_official.ConversionError, match='Conv/BatchNorm/gamma: contains NaN'):
    convert_official.convert(nan_tensor, available, model)


def test_only_the_real_index_file_says_where_the_weights_go(tmp_path, capsys):
  """What a clone of the PRNet repository gives: the real .index, not the weights."""
  from conftest import shared_path
  index = shared_path('prnet-official', '256_256_resfcn256_weight.index')
  import shutil
  (tmp_path / 'net-data').mkdir()
  shutil.copy(index, tmp_path / 'net-data')
  prefix = tmp_path / 'net-data' / '256_256_resfcn256_weight'
  for given in (prefix, f'{prefix}.index', tmp_path / 'net-data'):
    assert convert_official.main([f'--checkpoint={given}', f'--output={tmp_path}/o']) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert (f'{prefix}.index is here but not its weights file: put '
            f'256_256_resfcn256_weight.data-00000-of-00001 beside it') in err
    assert 'separate download' in err


def test_a_truncated_weights_file_is_named(tf, official_like, tmp_path, capsys):
  import shutil
  prefix, _, _ = official_like
  copy = tmp_path / '256_256_resfcn256_weight'
  shutil.copy(prefix + '.index', f'{copy}.index')
  data = open(prefix + '.data-00000-of-00001', 'rb').read()
  open(f'{copy}.data-00000-of-00001', 'wb').write(data[:len(data) // 2])
  assert convert_official.main([f'--checkpoint={copy}', f'--output={tmp_path}/o']) == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'Traceback' not in err
  assert f'{copy}.data-00000-of-00001: cannot read' in err and 'truncated or damaged' in err


def test_index_path_output_reuse_and_resolution(tf, official_like, tmp_path, capsys):
  prefix, values, _ = official_like
  out = f'{tmp_path}/ckpt'
  # The .index path itself is accepted.
  assert convert_official.main([f'--checkpoint={prefix}.index', f'--output={out}']) == 0
  capsys.readouterr()
  # Converting again into the same --output is refused with a message, unless --overwrite.
  assert convert_official.main([f'--checkpoint={prefix}', f'--output={out}']) == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'already holds a converted checkpoint; pass --overwrite' in err
  assert convert_official.main([f'--checkpoint={prefix}', f'--output={out}', '--overwrite']) == 0
  variables, config, step = checkpoints.load_variables(out)
  assert step == 0 and config.resolution == 256
  np.testing.assert_array_equal(variables['params']['conv0']['conv']['kernel'],
                                values['resfcn256/Conv/weights'])
  # A resolution the official weights were not trained at is refused.
  assert convert_official.main([f'--checkpoint={prefix}', f'--output={tmp_path}/r',
                                '--resolution=128']) == 1
  err = capsys.readouterr().err
  assert '--resolution=128 disagrees with the checkpoint' in err and 'Traceback' not in err
  assert not os.path.exists(f'{tmp_path}/r')


def test_overwrite_with_an_unreadable_input_keeps_the_existing_checkpoint(tf, official_like,
                                                                          tmp_path, capsys):
  """--overwrite replaces the step only once the new one is complete: a truncated weights
  file is refused and the checkpoint already there still loads, unchanged."""
  import shutil
  prefix, values, _ = official_like
  out = f'{tmp_path}/ckpt'
  assert convert_official.main([f'--checkpoint={prefix}', f'--output={out}']) == 0
  copy = tmp_path / 'damaged'
  shutil.copy(prefix + '.index', f'{copy}.index')
  data = open(prefix + '.data-00000-of-00001', 'rb').read()
  open(f'{copy}.data-00000-of-00001', 'wb').write(data[:len(data) // 2])
  capsys.readouterr()
  assert convert_official.main([f'--checkpoint={copy}', f'--output={out}', '--overwrite']) == 1
  assert 'truncated or damaged' in capsys.readouterr().err
  variables, _, step = checkpoints.load_variables(out)
  assert step == 0
  np.testing.assert_array_equal(variables['params']['conv0']['conv']['kernel'],
                                values['resfcn256/Conv/weights'])
  assert sorted(os.listdir(out)) == ['0', 'config.json']
