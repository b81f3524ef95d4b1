"""BatchNormAct equals flax BatchNorm + activation: values, variables, moving statistics and
gradients (float64 against automatic differentiation of the flax layers)."""

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prnet_jax.nn.batchnorm import BatchNormAct, activate, batch_norm_act_train


class FlaxBNAct(nn.Module):
  activation: str
  momentum: float = 0.9
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    y = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-3,
                     use_fast_variance=False, dtype=self.dtype, name='bn')(x)
    return activate(y, self.activation)


class OursBNAct(nn.Module):
  activation: str
  momentum: float = 0.9
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    return BatchNormAct(use_running_average=not train, momentum=self.momentum, epsilon=1e-3,
                        activation=self.activation, dtype=self.dtype, name='bn')(x)


def _inputs(seed=0, shape=(3, 5, 4, 6), dtype=np.float32):
  r = np.random.RandomState(seed)
  return (r.randn(*shape) * 2 + 0.5).astype(dtype)


@pytest.mark.parametrize('activation', [None, 'relu', 'sigmoid'])
def test_same_variables_outputs_and_moving_statistics_as_flax(activation):
  x = _inputs()
  ref, ours = FlaxBNAct(activation), OursBNAct(activation)
  v_ref = ref.init(jax.random.key(0), x, train=False)
  v_ours = ours.init(jax.random.key(0), x, train=False)
  assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), v_ours) == \
      jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), v_ref)
  # Non-trivial parameters, shared by both.
  r = np.random.RandomState(1)
  params = {'bn': {'scale': jnp.asarray(r.rand(6) + 0.5, jnp.float32),
                   'bias': jnp.asarray(r.randn(6), jnp.float32)}}
  v = {'params': params, 'batch_stats': v_ref['batch_stats']}
  y_ref, s_ref = ref.apply(v, x, train=True, mutable=['batch_stats'])
  y_ours, s_ours = ours.apply(v, x, train=True, mutable=['batch_stats'])
  np.testing.assert_array_equal(y_ours, y_ref)  # the same arithmetic, operation for operation
  for a, b in zip(jax.tree_util.tree_leaves(s_ours), jax.tree_util.tree_leaves(s_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  v2 = {'params': params, 'batch_stats': s_ref['batch_stats']}
  np.testing.assert_allclose(ours.apply(v2, x, train=False), ref.apply(v2, x, train=False),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('activation', [None, 'relu', 'sigmoid'])
def test_gradients_equal_automatic_differentiation_float64(activation):
  with jax.enable_x64(True):
    x = jnp.asarray(_inputs(2, dtype=np.float64))
    r = np.random.RandomState(3)
    scale, bias = jnp.asarray(r.rand(6) + 0.5), jnp.asarray(r.randn(6))
    probe = jnp.asarray(r.randn(*x.shape))
    w_mean, w_var = jnp.asarray(r.randn(6)), jnp.asarray(r.randn(6))

    def autodiff(x, scale, bias):  # the flax arithmetic, differentiated by JAX
      mean = jnp.mean(x, (0, 1, 2))
      var = jnp.mean(jnp.square(x - mean), (0, 1, 2))
      y = (x - mean) * (jax.lax.rsqrt(var + 1e-3) * scale) + bias
      return activate(y, activation), mean, var

    def loss(fn, *args):  # uses the statistics too, so their gradient paths are checked
      y, mean, var = fn(*args)
      return jnp.sum(y * probe) + jnp.sum(mean * w_mean) + jnp.sum(var * w_var)

    g_ref = jax.grad(lambda *a: loss(autodiff, *a), (0, 1, 2))(x, scale, bias)
    g_ours = jax.grad(lambda *a: loss(
        lambda x, s, b: batch_norm_act_train(x, s, b, 1e-3, activation), *a),
        (0, 1, 2))(x, scale, bias)
    for a, b in zip(g_ours, g_ref):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_bfloat16_output_and_float32_statistics():
  x = jnp.asarray(_inputs(), jnp.bfloat16)
  m = OursBNAct('relu', dtype=jnp.bfloat16)
  v = m.init(jax.random.key(0), x, train=False)
  y, s = m.apply(v, x, train=True, mutable=['batch_stats'])
  assert y.dtype == jnp.bfloat16
  assert s['batch_stats']['bn']['mean'].dtype == jnp.float32
  ref, _ = FlaxBNAct('relu', dtype=jnp.bfloat16).apply(v, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref, np.float32), atol=2e-2)
  g = jax.grad(lambda x: jnp.sum(m.apply(v, x, train=True, mutable=['batch_stats'])[0]
                                 .astype(jnp.float32)))(x)
  assert g.dtype == jnp.bfloat16


def test_unknown_activation_is_named():
  with pytest.raises(ValueError, match="activation must be one of"):
    OursBNAct('gelu').init(jax.random.key(0), _inputs(), train=False)


@pytest.mark.parametrize('dtype,stats', [('float32', 'float32'), ('bfloat16', 'float32'),
                                         ('float64', 'float64')])
def test_a_training_update_keeps_the_statistics_dtype(dtype, stats):
  """The moving statistics come out of a training step in the dtype they went in (float32;
  float64 for a float64 model): a train step's output state then has its input's types, and
  the jitted step does not compile again at the second step (it did for float64 models)."""
  with jax.enable_x64(True):
    x = jnp.asarray(_inputs(), dtype)
    bn = BatchNormAct(use_running_average=False, momentum=0.9, dtype=dtype, param_dtype=dtype)
    v = bn.init(jax.random.key(0), x)
    assert v['batch_stats']['mean'].dtype == stats
    _, updated = bn.apply(v, x, mutable=['batch_stats'])
    for key in ('mean', 'var'):
      assert updated['batch_stats'][key].dtype == v['batch_stats'][key].dtype
      assert not np.allclose(updated['batch_stats'][key], v['batch_stats'][key])
