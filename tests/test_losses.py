"""The weighted position-map loss and TF's L2 weight decay against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prnet_jax.faces.uv_assets import load_uv_assets
from prnet_jax.nn.losses import l2_weight_decay, position_map_loss


def np_loss(pred, target, weights, max_pos):
  d = (pred.astype(np.float64) - target.astype(np.float64)) / max_pos
  per_pixel = (d ** 2).sum(-1) * weights  # sum over xyz, then mean over pixels and channels
  return per_pixel.mean(axis=(1, 2)) / 3


def test_loss_matches_float64_reference():
  rng = np.random.RandomState(0)
  pred = rng.uniform(0, 281.6, (3, 32, 32, 3)).astype(np.float32)
  target = rng.uniform(0, 281.6, (3, 32, 32, 3)).astype(np.float32)
  weights = rng.choice([0.0, 3.0, 4.0, 16.0], (32, 32)).astype(np.float32)
  ref = np_loss(pred, target, weights, 281.6)
  per = position_map_loss(pred, target, weights, 281.6, per_example=True)
  np.testing.assert_allclose(np.asarray(per), ref, rtol=1e-5)
  assert float(position_map_loss(pred, target, weights, 281.6)) == pytest.approx(ref.mean(),
                                                                                 rel=1e-5)


def test_loss_is_zero_only_at_target_and_scales_with_weight():
  t = jnp.full((1, 8, 8, 3), 100.0)
  w = jnp.ones((8, 8))
  assert float(position_map_loss(t, t, w, 281.6)) == 0.0
  off = t.at[0, 2, 3, 1].add(10.0)
  base = float(position_map_loss(off, t, w, 281.6))
  assert base == pytest.approx((10 / 281.6) ** 2 / (8 * 8 * 3), rel=1e-5)
  assert float(position_map_loss(off, t, w.at[2, 3].set(16.0), 281.6)) == pytest.approx(16 * base)


@pytest.fixture(params=['official', 'procedural'])
def assets(request):
  if request.param == 'official':
    return load_uv_assets(request.getfixturevalue('official_uv_dir'))
  from prnet_jax.faces.face_model import derive_uv_assets
  from prnet_jax.faces.procedural_face import procedural_face_model
  return derive_uv_assets(procedural_face_model())


def test_neck_and_background_get_zero_weight(assets):
  a = assets
  w = jnp.asarray(a.loss_weights)
  target = jnp.zeros((1, 256, 256, 3))
  # Any error outside the face (neck, ears, background) costs nothing...
  outside = jnp.asarray(a.face_mask == 0)[None, :, :, None]
  pred = jnp.where(outside, 1000.0, 0.0) * jnp.ones((1, 256, 256, 3))
  assert float(position_map_loss(pred, target, w, 281.6)) == 0.0
  # ... and its gradient is exactly zero there, but not inside the face.
  grad = jax.grad(lambda p: position_map_loss(p, target + 1.0, w, 281.6))(jnp.zeros_like(target))
  g = np.abs(np.asarray(grad[0])).sum(-1)
  assert np.all(g[a.face_mask == 0] == 0) and np.all(g[a.face_mask == 1] > 0)
  # Landmark pixels weigh 16/3 times a plain face pixel.
  u, v = a.kpt_uv[0]
  values, counts = np.unique(a.loss_weights[a.loss_weights > 0], return_counts=True)
  face_weight = values[counts.argmax()]  # the plain face weight, ~3
  assert 2.9 < face_weight < 3.1
  plain = tuple(np.argwhere(a.loss_weights == face_weight)[0])
  assert g[v, u] / g[plain] == pytest.approx(16 / face_weight, rel=1e-5)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match=r'pred and target must both be \(batch, R, R, 3\)'):
    position_map_loss(jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 8, 2)), jnp.ones((8, 8)), 1.0)


def test_weight_decay_matches_tf_l2_regularizer():
  rng = np.random.RandomState(0)
  params = {'conv0': {'conv': {'kernel': rng.randn(4, 4, 3, 16)},
                      'bn': {'scale': rng.randn(16), 'bias': rng.randn(16)}},
            'deconv0': {'conv': {'kernel': rng.randn(4, 4, 8, 16)}}}
  ref = 2e-4 * sum(np.sum(k ** 2) / 2 for k in (params['conv0']['conv']['kernel'],
                                                params['deconv0']['conv']['kernel']))
  assert float(l2_weight_decay(params)) == pytest.approx(ref, rel=1e-5)
  with pytest.raises(ValueError, match='no kernels'):
    l2_weight_decay({'bn': {'scale': np.ones(3)}})
