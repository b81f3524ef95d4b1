"""Face models (procedural and BFM-schema), PRNet asset derivation, landmark consistency."""

import os

import numpy as np
from PIL import Image
import pytest
from scipy import io as sio

from prnet_jax.faces import face_model as fm
from prnet_jax.faces.procedural_face import EXPRESSIONS, procedural_face_model
from prnet_jax.faces.uv_assets import load_uv_assets
from prnet_jax.geometry import transforms

import fixtures


@pytest.fixture(scope='module')
def model():
  return procedural_face_model()


def test_procedural_model_is_deterministic_and_well_formed(model):
  again = procedural_face_model.__wrapped__()
  np.testing.assert_array_equal(model.mean, again.mean)
  np.testing.assert_array_equal(model.shape_basis, again.shape_basis)
  assert model.exp_names == EXPRESSIONS
  assert model.shape_basis.shape[1] >= 10 and model.exp_basis.shape[1] >= 4
  assert np.all((model.uv >= 0) & (model.uv <= 1))
  assert len(set(model.landmarks.tolist())) == 68
  assert model.albedo.shape == (model.num_vertices, 3)
  assert {fm.FACE, fm.EYES, fm.NOSE, fm.MOUTH, fm.OTHER} <= set(np.unique(model.regions))


def test_landmarks_have_ibug_semantics(model):
  k = model.mean[model.landmarks]
  assert k[0, 0] < 0 < k[16, 0]                      # jaw runs from image left to right
  assert k[8, 1] == k[:, 1].min()                    # chin is the lowest point
  assert k[30, 2] == k[:, 2].max()                   # nose tip is the most forward
  assert k[17:27, 1].min() > k[36:48, 1].max()       # brows above eyes
  assert k[36:48, 1].min() > k[27:36, 1].min() > k[48:68, 1].max()  # eyes > nose > mouth
  for a, b in [(0, 16), (36, 45), (39, 42), (48, 54), (31, 35)]:  # left/right symmetric
    np.testing.assert_allclose(k[a] * [-1, 1, 1], k[b], atol=1.5)
    np.testing.assert_allclose(model.uv[model.landmarks[a]] * [-1, 1] + [1, 0],
                               model.uv[model.landmarks[b]], atol=0.01)


def expression(model, name, value=1.0):
  e = np.zeros(len(model.exp_names))
  e[model.exp_names.index(name)] = value
  return model.vertices(None, e)[model.landmarks]


def test_expression_bases_do_what_their_names_say(model):
  rest = model.mean[model.landmarks]
  gap = lambda k: k[62, 1] - k[66, 1]                # inner lips
  assert gap(expression(model, 'jaw_open')) > gap(rest) + 5
  eye = lambda k: k[37, 1] - k[41, 1] + k[44, 1] - k[46, 1]
  assert eye(expression(model, 'eye_close')) < 0.2 * eye(rest)
  right_only = expression(model, 'right_eye_close')
  assert right_only[37, 1] - right_only[41, 1] < 0.2 * (rest[37, 1] - rest[41, 1])
  assert right_only[44, 1] - right_only[46, 1] == pytest.approx(rest[44, 1] - rest[46, 1])
  smile = expression(model, 'smile')
  assert smile[48, 1] > rest[48, 1] + 3 and smile[54, 1] > rest[54, 1] + 3
  assert expression(model, 'brow_raise')[19, 1] > rest[19, 1] + 4


def test_bases_are_smooth(model):
  # Neighbouring grid vertices move together: no field is noise.
  for basis in (model.shape_basis, model.exp_basis):
    d = basis.reshape(-1, 3, basis.shape[1])
    edges = model.triangles[:, :2]
    jump = np.abs(d[edges[:, 0]] - d[edges[:, 1]]).max(axis=(0, 1))
    amplitude = np.abs(d).max(axis=(0, 1))
    assert np.all(jump < 0.5 * amplitude + 1e-6), jump / amplitude


def test_bfm_schema_fixture_loads(tmp_path):
  src, bfm, uv = fixtures.write_bfm_fixture(str(tmp_path))
  m = fm.load_bfm(bfm, uv)
  np.testing.assert_allclose(m.mean, src.mean, atol=1e-4)
  np.testing.assert_allclose(m.shape_basis, src.shape_basis)
  np.testing.assert_array_equal(m.landmarks, src.landmarks)
  # `tri` then `tri_mouth`, 0-based
  np.testing.assert_array_equal(m.triangles, np.concatenate([src.triangles[2:],
                                                             src.triangles[:2]]))
  np.testing.assert_allclose(m.albedo, src.albedo, atol=1e-6)
  shape = np.random.RandomState(0).normal(size=m.shape_ev.shape)
  np.testing.assert_allclose(m.vertices(shape), src.vertices(shape), atol=1e-3)


def bad_copy(tmp_path, mutate):
  src, bfm, uv = fixtures.write_bfm_fixture(str(tmp_path))
  data = sio.loadmat(bfm)['model'][0, 0]
  fields = {k: data[k] for k in data.dtype.names}
  mutate(fields)
  sio.savemat(bfm, {'model': fields})
  return bfm, uv


def test_bfm_errors_name_file_and_problem(tmp_path):
  with pytest.raises(fm.FaceModelError, match=r'nowhere/BFM.mat: file not found'):
    fm.load_bfm(str(tmp_path / 'nowhere' / 'BFM.mat'), 'x')
  bfm, uv = bad_copy(tmp_path / 'a', lambda f: f.pop('expPC'))
  with pytest.raises(fm.FaceModelError, match=r"BFM.mat: model lacks fields \['expPC'\]"):
    fm.load_bfm(bfm, uv)
  _, bfm, uv = fixtures.write_bfm_fixture(str(tmp_path / 'b'))
  sio.savemat(uv, {'UV': np.zeros((10, 2))})
  with pytest.raises(fm.FaceModelError, match=r'BFM_UV.mat: UV has shape \(10, 2\)'):
    fm.load_bfm(bfm, uv)
  with open(bfm, 'rb') as f:
    head = f.read(300)
  with open(bfm, 'wb') as f:
    f.write(head)  # truncated
  with pytest.raises(fm.FaceModelError, match=r'BFM.mat: cannot read .mat'):
    fm.load_bfm(bfm, uv)


def check_landmark_consistency(model, seed):
  rng = np.random.default_rng(seed)
  assets = fm.derive_uv_assets(model)
  renderer = model.uv_renderer()
  shape = rng.normal(size=model.shape_ev.shape) * model.shape_ev
  exp = rng.normal(size=model.exp_ev.shape) * model.exp_ev * 0.5
  pose = [0.3, rng.uniform(-1.2, 1.2), -0.2, 300, 250, 0, 200 / np.ptp(model.mean[:, 0])]
  sample = transforms.position_map_from_3dmm(model.vertices(shape, exp), pose, 500,
                                           model.landmarks, 256,
                                           transforms.random_perturbation(rng))
  pos_map = np.asarray(renderer(sample.positions.astype(np.float32)))
  from_map = assets.landmarks(pos_map)
  projected = sample.positions[model.landmarks]
  np.testing.assert_allclose(from_map, projected, atol=2e-3)
  # ... and the map really varies (a broken lookup cannot pass by accident)
  assert np.ptp(from_map[:, 0]) > 50


@pytest.mark.parametrize('seed', [0, 1])
def test_landmarks_from_position_map_equal_projected_vertices_procedural(model, seed):
  check_landmark_consistency(model, seed)


def test_landmarks_from_position_map_equal_projected_vertices_bfm_fixture(tmp_path):
  _, bfm, uv = fixtures.write_bfm_fixture(str(tmp_path))
  check_landmark_consistency(fm.load_bfm(bfm, uv), 3)


def test_derived_assets_match_the_official_formats(model, tmp_path, official_uv_dir):
  derived = fm.derive_uv_assets(model)
  derived.save(str(tmp_path))
  for name in ('uv_face_mask.png', 'uv_weight_mask.png'):
    ours, theirs = Image.open(tmp_path / name), Image.open(os.path.join(official_uv_dir, name))
    assert (ours.mode, ours.size) == (theirs.mode, theirs.size)
  face_png = np.asarray(Image.open(tmp_path / 'uv_face_mask.png'))
  assert set(np.unique(face_png)) == {0, 255}
  weight_png = np.asarray(Image.open(tmp_path / 'uv_weight_mask.png'))
  official_weight = np.asarray(Image.open(os.path.join(official_uv_dir, 'uv_weight_mask.png')))
  # Same value conventions: 255 landmarks, 64 eyes/nose/mouth, 48 face (and outside).
  assert {48, 64, 255} <= set(np.unique(weight_png)) and {48, 64, 255} <= set(
      np.unique(official_weight))
  assert np.all(weight_png[face_png == 0] == 48)
  for name in ('uv_kpt_ind.txt', 'face_ind.txt'):
    ours = np.loadtxt(tmp_path / name)
    theirs = np.loadtxt(os.path.join(official_uv_dir, name))
    assert ours.dtype == theirs.dtype and ours.ndim == theirs.ndim
    assert ours.shape[0] == theirs.shape[0] if ours.ndim == 2 else True
    np.testing.assert_array_equal(ours, np.round(ours))  # integer-valued floats
  ours = np.load(tmp_path / 'canonical_vertices.npy')
  theirs = np.load(os.path.join(official_uv_dir, 'canonical_vertices.npy'))
  assert ours.dtype == theirs.dtype and ours.shape[1] == theirs.shape[1] == 3
  assert ours.shape[0] == len(np.loadtxt(tmp_path / 'face_ind.txt'))
  reloaded = load_uv_assets(str(tmp_path))
  np.testing.assert_array_equal(reloaded.loss_weights > 0, derived.face_mask > 0)
  # Meaning: landmark pixels weigh 16, and they are the landmark vertices' UV pixels.
  assert np.all(reloaded.loss_weights[reloaded.kpt_uv[:, 1], reloaded.kpt_uv[:, 0]] == 16)
  np.testing.assert_array_equal(
      reloaded.kpt_uv, np.round(transforms.uv_pixels(model.uv, 256)[model.landmarks]))
  # Like the official layout, the face covers much of the map, centred.
  assert 0.3 < derived.face_mask.mean() < 0.8
  cols = np.flatnonzero(derived.face_mask.any(0))
  assert abs((cols[0] + cols[-1]) / 2 - 127.5) < 3


def test_surface_landmarks_are_barycentric_points_and_bad_ones_are_named(model):
  import dataclasses
  rng = np.random.default_rng(0)
  corners = model.triangles[rng.choice(len(model.triangles), 68)]
  w = rng.dirichlet(np.ones(3), 68).astype(np.float32)
  m = dataclasses.replace(model, landmark_corners=corners, landmark_weights=w)
  v = model.mean.astype(np.float64)
  expected = np.stack([w[i] @ v[corners[i]] for i in range(68)])
  np.testing.assert_allclose(m.landmark_points(v), expected, rtol=1e-6)
  with pytest.raises(fm.FaceModelError, match='come together'):
    dataclasses.replace(model, landmark_corners=corners)
  with pytest.raises(fm.FaceModelError, match='not barycentric'):
    dataclasses.replace(model, landmark_corners=corners, landmark_weights=w * 2)
  with pytest.raises(fm.FaceModelError, match='corners out of range'):
    dataclasses.replace(model, landmark_corners=corners + len(v), landmark_weights=w)
