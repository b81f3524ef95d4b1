"""The 'ict' layout's jaw, read from the face around it (prnet_jax.faces.landmark_taps)."""

import jax.numpy as jnp
import numpy as np
import pytest

from prnet_jax.evaluation import alignment
from prnet_jax.faces import catalog, ict_face, ict_model
from prnet_jax.faces import face_model as fm
from prnet_jax.faces import landmark_taps as lt
from prnet_jax.faces import uv_assets as ua
from prnet_jax.geometry import transforms


@pytest.fixture(scope='module')
def fitted():
  # The shipped fit, with 100 faces past the 400 it was fitted on to check it.
  return lt.fit('ict', held_out=100)


def test_the_shipped_taps_are_the_fit(fitted):
  # (Weights to 1e-3: another CPU's float32 renders move a ridge solution a little.)
  with np.load(ict_face.LANDMARK_TAPS['ict']) as d:
    np.testing.assert_allclose(d['uv'], fitted['uv'], atol=1e-6)
    np.testing.assert_allclose(d['weights'], fitted['weights'], atol=1e-3)
    assert np.abs(d['weights'][:17, 1:]).max() > 0.05   # the jaw's taps are real combinations


def test_the_jaw_is_read_at_the_skin_points_of_faces_it_was_not_fitted_on(fitted):
  """On 100 further identities and expressions, each jaw point read from the face pixels lies
  within a few millimetres of its BFM-68 point on ICT's skin; the face region's own jaw
  points are 1-3 cm from them (why the taps exist)."""
  assert fitted['residual'].mean() < 0.25 and fitted['residual'].max() < 0.35, fitted['residual']
  ict, model = ict_model.load(), ict_face.face_model('ict')
  keep = ict_face.ict_vertices('ict')
  rng = np.random.default_rng(123)
  v = ict.vertices(ict_face.sample_identity(rng), ict_face.sample_expression(rng))
  read = lt.readout_on('ict', v[keep])
  skin = lt.skin_points(np.asarray(v, np.float64))
  region = model.landmark_points(np.asarray(v[keep], np.float64))
  jaw = list(lt.JAW)
  near = np.linalg.norm(read[jaw] - skin[jaw], axis=1)
  far = np.linalg.norm(region[jaw] - skin[jaw], axis=1)
  assert near.max() < 0.5 and np.median(far) > 4 * np.median(near), (near, far)
  # The other 51 are their points, as before (bilinear reads of the map: up to the surface's
  # bend within a pixel, most at the inner mouth corners 60 and 64 where the lips part).
  err = np.linalg.norm(read[17:] - region[17:], axis=1)
  crease = np.isin(np.arange(17, 68), [60, 64])
  assert np.median(err) < 0.05 and err[~crease].max() < 0.2, err


def test_the_taps_move_with_the_map():
  """Affine weights: any similarity of the position map moves the landmarks with it."""
  assets = catalog.uv_assets_for('ict', 64)
  taps, weights = assets.taps()
  np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
  pos = np.random.default_rng(0).normal(size=(64, 64, 3)) * 10
  r = transforms.angles_to_matrix(np.deg2rad([20.0, -40.0, 10.0]))
  moved = 1.7 * pos @ r.T + [30.0, -4.0, 12.0]
  np.testing.assert_allclose(assets.landmarks(moved),
                             1.7 * np.asarray(assets.landmarks(pos)) @ r.T + [30.0, -4.0, 12.0],
                             atol=1e-3)
  # Every pixel it reads is a face pixel (trained, meshed), at 64 px and at 256 px.
  for res in (64, 256):
    a = catalog.uv_assets_for('ict', res)
    t, w = a.taps()
    assert np.all(a.face_mask.reshape(-1)[t[w != 0]] > 0)
  # The taps add no pixel to the bundled model's 64 px face region.
  plain = fm.derive_uv_assets(ict_face.face_model('ict', taps=False), 64)
  np.testing.assert_array_equal(assets.face_mask, plain.face_mask)
  np.testing.assert_array_equal(assets.weight_mask, plain.weight_mask)


def test_the_oracle_map_reads_back_the_landmarks_when_taps_share_pixels():
  assets = catalog.uv_assets_for('ict', 64)
  taps, weights = assets.taps()
  shared = np.intersect1d(taps[0][weights[0] != 0], taps[1][weights[1] != 0])
  assert len(shared) > 10   # neighbouring jaw points read from common pixels
  rng = np.random.default_rng(1)
  batch = {'position_map': jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32),
           'landmarks': jnp.asarray(rng.normal(size=(2, 68, 3)) * 20, jnp.float32)}
  maps = alignment.oracle_maps(batch, assets, dense=False)
  np.testing.assert_allclose(np.asarray(assets.landmarks(maps)), batch['landmarks'], atol=2e-3)


def test_taps_survive_save_and_load_and_a_bad_file_is_named(tmp_path):
  assets = catalog.uv_assets_for('ict', 64)
  assets.save(str(tmp_path / 'uv'))
  back = ua.load_uv_assets(str(tmp_path / 'uv'))
  np.testing.assert_array_equal(back.kpt_taps, assets.kpt_taps)
  np.testing.assert_allclose(back.kpt_tap_weights, assets.kpt_tap_weights, rtol=1e-6)
  pos = np.random.default_rng(2).normal(size=(64, 64, 3))
  np.testing.assert_allclose(back.landmarks(pos), assets.landmarks(pos), atol=1e-5)
  (tmp_path / 'uv' / 'uv_kpt_taps.txt').write_text('1 2 3\n')
  with pytest.raises(ua.AssetError, match='uv_kpt_taps.txt'):
    ua.load_uv_assets(str(tmp_path / 'uv'))
  # Weights that are not affine are refused.
  t, w = assets.taps()
  with pytest.raises(ua.AssetError, match='sum to 1'):
    ua.UVAssets(**{**{f: getattr(assets, f) for f in ('kpt_uv', 'face_indices', 'face_mask',
                                                       'weight_mask', 'canonical_vertices',
                                                       'triangles', 'kpt_uv_subpixel')},
                   'kpt_taps': t, 'kpt_tap_weights': w * 2})


def test_a_missing_taps_file_is_named(tmp_path, monkeypatch):
  monkeypatch.setitem(ict_face.LANDMARK_TAPS, 'ict', str(tmp_path / 'gone.npz'))
  ict_face._model.cache_clear()  # pylint: disable=protected-access
  try:
    with pytest.raises(ict_model.ICTModelError, match='gone.npz'):
      ict_face.face_model('ict')
  finally:
    monkeypatch.undo()
    ict_face._model.cache_clear()  # pylint: disable=protected-access


def test_a_face_model_with_taps_that_are_not_affine_is_refused():
  import dataclasses
  model = ict_face.face_model('ict')
  with pytest.raises(fm.FaceModelError, match='tap weights do not sum to 1'):
    dataclasses.replace(model, landmark_taps_weights=model.landmark_taps_weights * 2)
  with pytest.raises(fm.FaceModelError, match='come together'):
    dataclasses.replace(model, landmark_taps_weights=None)
  with pytest.raises(fm.FaceModelError, match='outside'):
    dataclasses.replace(model, landmark_taps_uv=model.landmark_taps_uv + 2)
