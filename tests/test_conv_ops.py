"""The fast convolutions compute the reference function (values and gradients, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prnet_jax.nn import conv_ops
from prnet_jax.nn.model import PRNet, init_variables

CASES = [  # (op, kernel size, stride, transposed kernel layout)
    (conv_ops.conv_same, 4, 1, False), (conv_ops.conv_same, 4, 2, False),
    (conv_ops.conv_same, 1, 1, False), (conv_ops.conv_same, 1, 2, False),
    (conv_ops.conv_transpose_same, 4, 1, True), (conv_ops.conv_transpose_same, 4, 2, True)]


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.mark.parametrize('op,k,stride,transposed', CASES)
def test_fast_equals_reference_values_and_gradients(x64, op, k, stride, transposed):
  r = np.random.RandomState(k * 10 + stride)
  cin, cout = 3, 5
  x = jnp.asarray(r.randn(2, 8, 6, cin))
  kernel = jnp.asarray(r.randn(*((k, k, cout, cin) if transposed else (k, k, cin, cout))))
  ref = op(x, kernel, stride, 'reference')
  fast = op(x, kernel, stride, 'fast')
  assert fast.dtype == jnp.float64
  out_hw = (8 * stride, 6 * stride) if transposed else (8 // stride, 6 // stride)
  assert ref.shape == fast.shape == (2, *out_hw, cout)
  np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)

  probe = jnp.asarray(r.randn(*ref.shape))  # a generic cotangent
  grads = [jax.grad(lambda a, b: jnp.sum(jnp.sin(op(a, b, stride, impl)) * probe), (0, 1))(
      x, kernel) for impl in ('reference', 'fast')]
  for g_ref, g_fast in zip(*grads):
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-11, atol=1e-11)


def test_transposed_conv_is_the_adjoint_of_the_conv(x64):
  """<conv(x, w), y> == <x, conv_transpose(y, w)>: the defining property, checked on the fast
  path (the reference agrees by the test above)."""
  r = np.random.RandomState(0)
  for stride in (1, 2):
    w = jnp.asarray(r.randn(4, 4, 3, 5))         # conv: 3 -> 5 channels
    x = jnp.asarray(r.randn(2, 8, 8, 3))
    y = jnp.asarray(r.randn(2, 8 // stride, 8 // stride, 5))
    lhs = jnp.sum(conv_ops.conv_same(x, w, stride) * y)
    # The transposed conv of a TF kernel [k, k, out, in] maps `in` (here 5) back to `out` (3).
    rhs = jnp.sum(x * conv_ops.conv_transpose_same(y, w, stride))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_bad_arguments_are_named():
  x, w = jnp.zeros((1, 8, 8, 3)), jnp.zeros((4, 4, 3, 5))
  with pytest.raises(ValueError, match='impl must be one of'):
    conv_ops.conv_same(x, w, 1, impl='cudnn')
  with pytest.raises(ValueError, match='stride must be 1 or 2'):
    conv_ops.conv_same(x, w, 3)
  with pytest.raises(ValueError, match='4x4'):
    conv_ops.conv_transpose_same(x, jnp.zeros((3, 3, 5, 3)), 2)


@pytest.mark.slow(reason='full-model gradients in float64')
def test_model_fast_equals_reference_with_identical_parameters(x64):
  """Same parameter tree and initial values, same outputs, same gradients (float64)."""
  kw = dict(resolution=32, width=2, dtype=jnp.float64, param_dtype=jnp.float64)
  fast, ref = PRNet(impl='fast', **kw), PRNet(impl='reference', **kw)
  v_fast = init_variables(fast, jax.random.key(3))
  v_ref = init_variables(ref, jax.random.key(3))
  assert jax.tree_util.tree_structure(v_fast) == jax.tree_util.tree_structure(v_ref)
  for a, b in zip(jax.tree_util.tree_leaves(v_fast), jax.tree_util.tree_leaves(v_ref)):
    np.testing.assert_array_equal(a, b)
  x = jnp.asarray(np.random.RandomState(0).rand(3, 32, 32, 3))

  def loss(model, params):
    out, _ = model.apply({'params': params, 'batch_stats': v_ref['batch_stats']}, x,
                         train=True, mutable=['batch_stats'])
    return jnp.mean(jnp.square(out - 10.0)), out

  # Jitted: op-by-op float64 dispatch of ~60 layers forward and backward took ~2 minutes.
  (l_f, out_f), g_f = jax.jit(jax.value_and_grad(lambda p: loss(fast, p), has_aux=True))(
      v_ref['params'])
  (l_r, out_r), g_r = jax.jit(jax.value_and_grad(lambda p: loss(ref, p), has_aux=True))(
      v_ref['params'])
  np.testing.assert_allclose(out_f, out_r, rtol=1e-10)
  np.testing.assert_allclose(l_f, l_r, rtol=1e-12)
  for a, b in zip(jax.tree_util.tree_leaves(g_f), jax.tree_util.tree_leaves(g_r)):
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * float(jnp.max(jnp.abs(b))))


@pytest.mark.slow(reason='full model')
def test_prepared_model_computes_the_same_inference(x64):
  """prepare_for_inference: same outputs, kernels rearranged once; training refuses it."""
  from prnet_jax.nn.model import prepare_for_inference
  model = PRNet(resolution=32, width=2, dtype=jnp.float64, param_dtype=jnp.float64)
  variables = init_variables(model, jax.random.key(0))
  x = jnp.asarray(np.random.RandomState(0).rand(2, 32, 32, 3))
  # Moving statistics from a batch, so that the output is not nearly constant.
  _, upd = model.clone(bn_momentum=0.0).apply(variables, x, train=True, mutable=['batch_stats'])
  variables = {'params': variables['params'], 'batch_stats': upd['batch_stats']}
  prepared, pvars = prepare_for_inference(model, variables)
  assert pvars['params']['deconv1']['conv']['kernel'].shape == (2, 2, 64, 4 * 32)  # stride 2
  assert pvars['params']['deconv0']['conv']['kernel'].shape == (4, 4, 64, 64)      # stride 1
  np.testing.assert_allclose(prepared.apply(pvars, x), model.apply(variables, x), rtol=1e-12)
  with pytest.raises(ValueError, match='inference only'):
    prepared.apply(pvars, x, train=True, mutable=['batch_stats'])
  with pytest.raises(ValueError, match='not yet prepared'):
    prepare_for_inference(prepared, pvars)
