"""The ICT position-map FaceModel: its UV layout, the 300W-LP procedure on it, the samplers."""

import numpy as np
import pytest

from prnet_jax.faces import face_model as fm
from prnet_jax.faces import ict_face, ict_model
from prnet_jax.geometry import transforms


@pytest.fixture(scope='module')
def model():
  return ict_face.face_model()


def signed_areas(px, tris):
  a = px[tris]
  return ((a[:, 1, 0] - a[:, 0, 0]) * (a[:, 2, 1] - a[:, 0, 1])
          - (a[:, 2, 0] - a[:, 0, 0]) * (a[:, 1, 1] - a[:, 0, 1]))


def ict_own_landmarks(model):
  """(68,) ICT's own landmark vertices in the face model's numbering."""
  keep = ict_face.ict_vertices()
  own = np.searchsorted(keep, ict_model.load().landmarks)
  assert np.array_equal(keep[own], ict_model.load().landmarks)
  return own


def test_uv_layout_is_face_centred_unfolded_and_fills_the_map(model):
  px = transforms.uv_pixels(model.uv, 256)
  assert np.all((px >= 0) & (px <= 255))
  areas = signed_areas(px, model.triangles)
  assert np.all(areas < 0)  # one orientation: no fold anywhere
  k = px[ict_own_landmarks(model)]
  np.testing.assert_allclose(k, np.round(k), atol=1e-4)  # landmarks on pixel centres
  # Where PRNet's official layout puts them: jaw ends, brows, chin; left/right symmetric.
  np.testing.assert_allclose(k[[0, 16], 0], [15, 240], atol=0.5)
  np.testing.assert_allclose(k[[19, 24], 1].mean(), 39, atol=0.5)
  np.testing.assert_allclose(k[8], [127.5, 193], atol=0.5)
  assert k[36, 0] + k[45, 0] == pytest.approx(255, abs=1)
  renderer = model.uv_renderer(256)
  mask = np.asarray(renderer.mask)
  assert mask.mean() > 0.9 and mask[k[:, 1].astype(int), k[:, 0].astype(int)].all()
  # Only the face, forehead, ears and neck: eyes, teeth, mouth interior are rendering parts.
  assert model.num_vertices < 9409 + 1839
  # The eye and mouth openings are closed (one outer border, a few tiny holes at most).
  loops = sorted(len(l) for l in ict_face.boundary_loops(model.triangles))
  assert loops[-1] > 100 and all(n < 30 for n in loops[:-1])


def test_the_bfm68_layout_puts_the_benchmarks_landmarks_where_prnet_has_them():
  """'ict_bfm68': the layout is fitted to the BFM-68 points themselves (on ICT's skin, the jaw's
  upper ends beside the ears), which fall where PRNet's official layout has its landmarks."""
  model = ict_face.face_model('ict_bfm68')
  px = transforms.uv_pixels(model.uv, 256)
  assert np.all((px >= 0) & (px <= 255))
  areas = signed_areas(px, model.triangles)
  assert np.all(areas < 0)  # no fold anywhere
  k = model.landmark_points(px)  # the benchmark's points in the map, between pixel centres
  np.testing.assert_allclose(k[[0, 16], 0], [15, 240], atol=0.01)  # float32 UVs
  np.testing.assert_allclose(k[[19, 24], 1].mean(), 39, atol=0.01)
  np.testing.assert_allclose(k[8], [127.5, 193], atol=0.6)
  # Every landmark well inside the map (the 'ict' layout's BFM-68 jaw ends would not be).
  assert k.min() > 10 and k.max() < 245
  mask = np.asarray(model.uv_renderer(256).mask)
  assert mask.mean() > 0.9 and mask[np.round(k[:, 1]).astype(int),
                                    np.round(k[:, 0]).astype(int)].all()
  # The face region (trained, meshed) holds every landmark's taps.
  assets = fm.derive_uv_assets(model, 256)
  for u, v, w in assets.bilinear_taps():
    assert np.all(assets.face_mask[v, u][w > 0] > 0)
  with pytest.raises(ValueError, match='ict_bfm68'):
    ict_face.face_model('bfm')


@pytest.mark.parametrize('layout', ['ict', 'ict_bfm68'])
def test_the_300wlp_procedure_reads_every_landmark_from_the_map(layout):
  model = ict_face.face_model(layout)
  rng = np.random.default_rng(0)
  renderer = model.uv_renderer(256)
  assets = fm.derive_uv_assets(model, 256)
  for k in range(4):
    shape = ict_face.sample_identity(rng)
    exp = ict_face.sample_expression(rng)
    vertices = model.vertices(shape, exp)
    pose = [np.deg2rad(rng.uniform(-20, 20)), np.deg2rad([-70, -30, 10, 60][k]),
            np.deg2rad(rng.uniform(-20, 20)), 200, 220, 0, 8.0]  # cm -> pixels
    sample = transforms.position_map_from_3dmm(vertices, pose, 450, model.landmarks, 256)
    pos = np.asarray(renderer(sample.positions.astype(np.float32)))
    # The landmarks are surface points between pixel centres: the map's bilinear sample equals
    # the barycentric point up to the surface's bend within a pixel. The inner mouth corners
    # (60, 64) sit on the crease where the lips part: one pixel spans both lips of an open mouth.
    # The eyes' points bend with the lids (up to ~1 px in the 'ict_bfm68' layout).
    # (The 'ict' layout reads its jaw from the face around it: tests/test_landmark_taps.py.)
    read = np.arange(68) if model.landmark_taps_uv is None else np.arange(17, 68)
    lm = model.landmark_points(sample.positions)
    err = np.linalg.norm(assets.landmarks(pos) - lm, axis=-1)[read]
    crease = np.isin(read, [60, 64])
    assert np.median(err) < 0.05 and np.percentile(err, 90) < 0.45, err
    assert err[~crease].max() < 1.5 and err[crease].max() < 5.0, err
    # The face fills the crop like a 300W-LP sample: landmarks well inside it.
    assert lm[:, :2].min() > 20 and lm[:, :2].max() < 236
  weights = assets.weight_mask * assets.face_mask
  assert set(np.unique(weights)) >= {0.0, 3.0, 4.0, 16.0}
  assert 0.4 < assets.face_mask.mean() < 0.7


def test_expressions_are_sparse_plausible_combinations():
  model = ict_face.face_model()
  names = model.exp_names
  a = ict_face.sample_expression(np.random.default_rng(3))
  np.testing.assert_array_equal(a, ict_face.sample_expression(np.random.default_rng(3)))
  samples = np.stack([ict_face.sample_expression(np.random.default_rng(s)) for s in range(600)])
  assert samples.min() >= 0 and samples.max() <= 1
  active = (samples > 0).sum(1)
  assert active.mean() < 8 and 0.05 < (active == 0).mean() < 0.4
  col = lambda n: samples[:, names.index(n)]
  for n in ('jawOpen', 'eyeBlink_L', 'eyeBlink_R', 'mouthSmile_L', 'mouthSmile_R',
            'browInnerUp_L', 'mouthPucker', 'eyeSquint_R', 'noseSneer_L', 'mouthLeft'):
    assert (col(n) > 0.2).mean() > 0.02, n
  # Winks and one-sided smiles: strongly asymmetric samples exist; most are near symmetric.
  blink = np.abs(col('eyeBlink_L') - col('eyeBlink_R'))
  assert (blink > 0.6).mean() > 0.02 and np.median(blink[blink > 0]) < 0.6


def test_identities_use_the_models_statistics(model):
  rng = np.random.default_rng(1)
  iods = []
  for _ in range(50):
    v = model.vertices(ict_face.sample_identity(rng))
    iods.append(np.linalg.norm(v[model.landmarks[36]] - v[model.landmarks[45]]))
  iods = np.asarray(iods)
  # Centimetres: adult outer eye corners ~8-10.5 apart; identities differ.
  assert 7.5 < iods.min() and iods.max() < 11 and iods.std() > 0.1


def test_runs_name_the_ict_assets(model):
  """`uv_assets_for('ict', R)` (config.uv_assets / --uv_assets) gives the ICT model's assets,
  weighted like the official mask (landmarks 16 with a halo, eyes/nose/mouth 4, face 3),
  at the training resolutions."""
  from prnet_jax.faces.catalog import uv_assets_for
  a = uv_assets_for('ict', 256)
  np.testing.assert_array_equal(a.kpt_uv, fm.derive_uv_assets(model, 256).kpt_uv)
  assert sorted(np.unique(a.weight_mask)) == [3, 4, 7.5, 16]
  assert np.sum(a.weight_mask == 16) == 68
  small = uv_assets_for('ict', 64)
  assert small.face_mask.shape == (64, 64) and small.kpt_uv.max() < 64
