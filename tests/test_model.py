"""The network: exact sizes, TF 'SAME' layer semantics against NumPy, BN and dtype behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prnet_jax.nn import model as model_lib
from prnet_jax.nn.model import ConvBN, ModelConfig, PRNet, count_params, init_variables


def np_conv_same(x, w, s):
  """Brute-force TF conv2d, padding 'SAME'. x (B,H,W,Ci), w (k,k,Ci,Co)."""
  b, h, _, _ = x.shape
  k = w.shape[0]
  out = -(-h // s)
  total = max((out - 1) * s + k - h, 0)
  pb = total // 2
  xp = np.pad(x, ((0, 0), (pb, total - pb), (pb, total - pb), (0, 0)))
  y = np.zeros((b, out, out, w.shape[3]))
  for i in range(k):
    for j in range(k):
      y += xp[:, i:i + (out - 1) * s + 1:s, j:j + (out - 1) * s + 1:s, :] @ w[i, j]
  return y


def np_conv_transpose_same(x, w, s):
  """Brute-force TF conv2d_transpose ('SAME', output = input * s): the gradient of
  np_conv_same from an (H*s)-sized input, by scattering. w (k,k,Co,Ci) as TF stores it."""
  b, h, _, _ = x.shape
  k, n = w.shape[0], h * s
  pb = max((h - 1) * s + k - n, 0) // 2  # the forward conv's padding before
  off = k
  y = np.zeros((b, n + 2 * k, n + 2 * k, w.shape[2]))
  for i in range(k):
    for j in range(k):
      r0, c0 = off + i - pb, off + j - pb
      y[:, r0:r0 + (h - 1) * s + 1:s, c0:c0 + (h - 1) * s + 1:s, :] += x @ w[i, j].T
  return y[:, off:off + n, off:off + n, :]


@pytest.mark.slow(reason='full model')
def test_default_model_has_official_sizes():
  rows, n_params, n_stats = model_lib.layer_table(PRNet())
  assert n_params == 13_353_618
  assert n_stats == 11_890
  assert [r[0] for r in rows] == (['conv0'] + [f'res{i}' for i in range(10)]
                                  + [f'deconv{i}' for i in range(17)])
  assert rows[10][1] == (1, 8, 8, 512)  # bottleneck
  assert rows[-1][1] == (1, 256, 256, 3)


def test_main_prints_summary_line(capsys):
  model_lib.main([])
  out = capsys.readouterr().out
  assert out.rstrip().splitlines()[-1] == 'trainable parameters: 13353618, batch statistics: 11890'
  assert 'res9' in out and '(1, 8, 8, 512)' in out


@pytest.mark.parametrize('transpose,kernel,stride', [
    (False, 4, 1), (False, 4, 2), (False, 1, 2), (False, 1, 1), (True, 4, 1), (True, 4, 2)])
def test_layer_matches_tf_same_padding_reference(transpose, kernel, stride):
  layer = ConvBN(5, kernel, stride, transpose=transpose, use_bn=False, activation=None)
  x = np.random.RandomState(0).randn(2, 8, 8, 3).astype(np.float32)
  variables = layer.init(jax.random.key(1), x, train=False)
  w = np.asarray(variables['params']['conv']['kernel'], np.float64)
  assert w.shape == ((kernel, kernel, 5, 3) if transpose else (kernel, kernel, 3, 5))
  got = np.asarray(layer.apply(variables, x, train=False))
  ref = (np_conv_transpose_same if transpose else np_conv_same)(x.astype(np.float64), w, stride)
  assert got.shape == ref.shape
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_reference_is_sensitive_to_padding_and_flip():
  # The references must distinguish the conventions they guard: shifting padding or
  # flipping the kernel changes the answer.
  rng = np.random.RandomState(0)
  x, w = rng.randn(1, 8, 8, 2), rng.randn(4, 4, 2, 3)
  a = np_conv_same(x, w, 1)
  b = np_conv_same(x[:, ::-1, ::-1], w, 1)[:, ::-1, ::-1]  # = padding 2 before / 1 after
  assert np.abs(a - b).max() > 1e-3
  wt = rng.randn(4, 4, 3, 2)
  c = np_conv_transpose_same(x, wt, 2)
  d = np_conv_transpose_same(x, wt[::-1, ::-1], 2)
  assert np.abs(c - d).max() > 1e-3


def small_model(**kw):
  return PRNet.from_config(ModelConfig(resolution=64, width=4, **kw))


@pytest.fixture(scope='module')
def small_variables():
  # One (slow to compile) init shared by the tests of this module.
  return jax.jit(lambda k: init_variables(small_model(), k))(jax.random.key(0))


@pytest.mark.slow(reason='full model')
def test_output_shape_range_and_max_pos(small_variables):
  model, variables = small_model(), small_variables
  x = jax.random.uniform(jax.random.key(1), (3, 64, 64, 3))
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert out.shape == (3, 64, 64, 3) and out.dtype == jnp.float32
  assert model.max_pos == pytest.approx(70.4)
  assert float(out.min()) > 0 and float(out.max()) < model.max_pos


@pytest.mark.slow(reason='full model')
def test_train_mode_uses_batch_stats_and_updates_them_with_tf_decay(small_variables):
  model, variables = small_model(), small_variables
  x = jax.random.uniform(jax.random.key(1), (4, 64, 64, 3))
  _, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, x)
  # First BN normalises conv0's output; its batch mean over (B, H, W) enters with weight 0.001.
  conv_out = jax.lax.conv_general_dilated(
      x, variables['params']['conv0']['conv']['kernel'], (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  batch_mean = np.asarray(conv_out).mean(axis=(0, 1, 2))
  new_mean = np.asarray(updates['batch_stats']['conv0']['bn']['mean'])
  np.testing.assert_allclose(new_mean, 0.001 * batch_mean, rtol=1e-4, atol=1e-7)
  new_var = np.asarray(updates['batch_stats']['conv0']['bn']['var'])
  np.testing.assert_allclose(new_var, 0.999 + 0.001 * np.asarray(conv_out).var(axis=(0, 1, 2)),
                             rtol=1e-5)


def test_init_kernels_are_glorot_uniform_from_one_draw(small_variables):
  model, variables = small_model(), small_variables
  # The same tree, shapes and dtypes as flax's own init.
  flax_init = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), train=False),
                             jax.random.key(0))
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(flax_init)
  initial = {'scale': 1.0, 'bias': 0.0, 'mean': 0.0, 'var': 1.0}  # BatchNorm's
  kernels = []
  for (path, x), ref in zip(jax.tree_util.tree_leaves_with_path(variables),
                            jax.tree_util.tree_leaves(flax_init)):
    assert x.shape == ref.shape and x.dtype == ref.dtype, path
    x = np.asarray(x)
    if path[-1].key != 'kernel':
      np.testing.assert_array_equal(x, initial[path[-1].key])
      continue
    # Flax's xavier_uniform bound, computed here from the shape.
    kh, kw, a, b = x.shape
    limit = np.sqrt(6.0 / (kh * kw * (a + b)))
    assert np.abs(x).max() <= limit, path
    if x.size >= 2000:  # enough samples: the spread of U(-l, l) (std l / sqrt(3))
      assert np.std(x) == pytest.approx(limit / np.sqrt(3), rel=0.1), path
      assert np.abs(x).max() > 0.95 * limit, path
    kernels.append(x.ravel())
  # Different kernels are different slices of the draw, not repeats of one.
  firsts = {tuple(k[:4]) for k in kernels}
  assert len(firsts) == len(kernels) > 40
  # The key decides the draw.
  again = jax.jit(lambda k: init_variables(model, k))(jax.random.key(0))
  other = jax.jit(lambda k: init_variables(model, k))(jax.random.key(1))
  k0 = variables['params']['conv0']['conv']['kernel']
  np.testing.assert_array_equal(again['params']['conv0']['conv']['kernel'], k0)
  assert not np.allclose(other['params']['conv0']['conv']['kernel'], k0)


def test_no_biases_and_bn_epsilon(small_variables):
  variables = small_variables
  leaves = [tuple(k.key for k in p) for p, _ in
            jax.tree_util.tree_leaves_with_path(variables['params'])]
  assert {p[-1] for p in leaves} == {'kernel', 'scale', 'bias'}
  # Every 'bias' is a BatchNorm offset (beta), never a conv bias.
  assert all(p[-2] == 'bn' for p in leaves if p[-1] == 'bias')
  assert model_lib.BN_EPSILON == 1e-3


@pytest.mark.slow(reason='full model')
def test_bfloat16_compute_keeps_float32_params_and_stats(small_variables):
  model32, model16 = small_model(), small_model(dtype='bfloat16')
  shapes = jax.eval_shape(lambda k: init_variables(model16, k), jax.random.key(0))
  assert {x.dtype for x in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype('float32')}
  variables = small_variables
  x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
  train16 = jax.jit(lambda v, x: model16.apply(v, x, train=True, mutable=['batch_stats']))
  out16, upd = train16(variables, x)
  assert out16.dtype == jnp.float32
  assert {v.dtype for v in jax.tree_util.tree_leaves(upd)} == {jnp.dtype('float32')}
  out32 = jax.jit(lambda v, x: model32.apply(v, x, train=False))(variables, x)
  out16 = jax.jit(lambda v, x: model16.apply(v, x, train=False))(variables, x)
  # bf16 has ~3 significant digits; positions are within a few percent of MaxPos.
  assert float(jnp.abs(out16 - out32).max()) < 0.05 * model32.max_pos
  assert float(jnp.abs(out16 - out32).max()) > 0  # it really computed in bf16


def test_width_scales_parameters_quadratically():
  def n(model):
    return count_params(jax.eval_shape(lambda k: init_variables(model, k),
                                       jax.random.key(0))['params'])
  n4, n8 = n(small_model()), n(PRNet(resolution=64, width=8))
  assert 3.5 < n8 / n4 < 4.0  # 3-channel output layers do not scale with width


@pytest.mark.parametrize('kwargs,shape,message', [
    (dict(resolution=100), (1, 100, 100, 3), 'multiple of 32'),
    (dict(resolution=64), (1, 32, 32, 3), r'\(batch, 64, 64, 3\)'),
    (dict(resolution=64), (64, 64, 3), r'got \(64, 64, 3\)'),
])
def test_bad_shapes_raise_clear_errors(kwargs, shape, message):
  model = PRNet(width=4, **kwargs)
  with pytest.raises(ValueError, match=message):
    model.init(jax.random.key(0), jnp.zeros(shape), train=False)


def test_model_config_round_trip_and_errors():
  cfg = ModelConfig(128, 8, 'bfloat16')
  assert ModelConfig.from_mapping(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match='Unknown model config fields'):
    ModelConfig.from_mapping({'resolution': 64, 'depth': 3})
  with pytest.raises(ValueError, match='dtype must be'):
    PRNet.from_config(ModelConfig(dtype='int8'))
