"""The BFM-68 landmarks on the ICT surface: the closest-point search, the similarity, the shipped
calibration (reproducible from the BFM mean, and a lower landmark floor on real frontal faces)."""

import glob
import os

import numpy as np
import pytest

from conftest import shared_path
from prnet_jax.data import readers
from prnet_jax.faces import ict_face, ict_model
from prnet_jax.faces import landmark_calibration as lc


def random_rotation(rng):
  q, r = np.linalg.qr(rng.normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  return q if np.linalg.det(q) > 0 else -q


def test_similarity_recovers_a_known_transform():
  rng = np.random.default_rng(0)
  src = rng.normal(size=(30, 3))
  r, s, t = random_rotation(rng), 2.5, rng.normal(size=3)
  got_s, got_r, got_t = lc.similarity(src, s * src @ r.T + t)
  assert got_s == pytest.approx(s) and np.allclose(got_r, r) and np.allclose(got_t, t)


def test_closest_points_against_dense_sampling_of_every_triangle():
  rng = np.random.default_rng(1)
  vertices = rng.normal(size=(12, 3))
  triangles = np.array([rng.choice(12, 3, replace=False) for _ in range(10)])
  points = rng.normal(size=(25, 3)) * 1.5
  tri, w, d = lc.closest_points(points, vertices, triangles)
  assert np.all(w >= -1e-12) and np.allclose(w.sum(1), 1)
  q = (w[:, :, None] * vertices[triangles[tri]]).sum(1)
  np.testing.assert_allclose(np.linalg.norm(q - points, axis=1), d, atol=1e-12)
  # Brute force: a fine barycentric grid on every triangle is never closer than the answer,
  # and its best point is within the grid's spacing of it.
  n = 60
  i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1))
  keep = i + j <= n
  bary = np.stack([1 - (i + j)[keep] / n, i[keep] / n, j[keep] / n], 1)
  grid = np.einsum('gk,tkc->tgc', bary, vertices[triangles]).reshape(-1, 3)
  brute = np.linalg.norm(grid[None] - points[:, None], axis=-1).min(1)
  assert np.all(d <= brute + 1e-12)
  longest = np.linalg.norm(vertices[triangles] - vertices[np.roll(triangles, 1, 1)], axis=-1).max()
  assert np.all(brute - d <= longest / n)


@pytest.mark.parametrize('surface', lc.SURFACES)
def test_the_shipped_points_are_reproduced_from_the_bfm_mean(surface):
  shape, kpt = lc.read_bfm_mean(shared_path('bfm-metadata', 'Model_Shape_Sim.mat'))
  out = lc.calibrate(shape, kpt, surface=surface)
  shipped = np.load(lc.SHIPPED_FOR[surface])
  # The same points on ICT's neutral surface (cm). Not the same triangle ids: the ICP runs in
  # float32, whose last bits differ between CPUs (XLA's vector width), and a point on an edge
  # then falls in one or the other of its two triangles, at the same spot.
  neutral = ict_model.load().neutral.astype(np.float64)

  def on_neutral(p):
    return (p['weights'][:, :, None] * neutral[p['corners']]).sum(1)
  np.testing.assert_allclose(on_neutral(out), on_neutral(shipped), atol=1e-3)
  assert (out['corners'] == shipped['corners']).all(1).mean() > 0.9
  # The mapped BFM face lies on the ICT surface for most points (cm).
  assert np.median(out['distance']) < 0.3


def test_a_bad_bfm_file_is_named(tmp_path):
  from scipy import io as sio
  bad = str(tmp_path / 'bad.mat')
  sio.savemat(bad, {'something': np.zeros(3)})
  with pytest.raises(lc.CalibrationError, match='bad.mat'):
    lc.read_bfm_mean(bad)
  assert lc.main(['--bfm', bad, '--output', str(tmp_path / 'out.npz')]) == 1
  assert not os.path.exists(tmp_path / 'out.npz')


def floor(points, faces):
  """Mean 2D NME (box normaliser) of a rigid shape fitted to each face by a 3D similarity."""
  points = points * np.array([1, -1, 1])          # model y up -> image y down
  out = []
  for g in faces:
    s, r, t = lc.similarity(points, g)
    p = s * points @ r.T + t
    out.append(np.linalg.norm(p[:, :2] - g[:, :2], axis=1).mean() /
               np.sqrt(np.ptp(g[:, 0]) * np.ptp(g[:, 1])))
  return float(np.mean(out))


def test_the_calibrated_points_lower_the_floor_on_real_frontal_faces():
  """The world's landmark floor: how well the neutral face's 68 points can match the
  development half's frontal faces (|yaw| <= 30) by a similarity alone."""
  folder = shared_path('aflw2000-dev')
  faces = []
  for path in sorted(glob.glob(os.path.join(folder, '*.mat'))):
    mat = readers.load_mat(path, {'pt3d_68': (3, 68), 'Pose_Para': None})
    if abs(np.asarray(mat['Pose_Para']).reshape(-1)[1]) <= np.deg2rad(30):
      faces.append(mat['pt3d_68'].T)
  assert len(faces) > 500
  model, ict = ict_face.face_model(), ict_model.load()
  own = floor(ict.neutral.astype(np.float64)[ict.landmarks], faces)
  calibrated = floor(model.landmark_points(model.mean.astype(np.float64)), faces)
  assert calibrated < own - 0.003, (own, calibrated)
  # The 'ict_bfm68' layout's points (anywhere on ICT's skin): lower still, under 3%.
  wide = ict_face.face_model('ict_bfm68')
  skin = floor(wide.landmark_points(wide.mean.astype(np.float64)), faces)
  assert skin < min(calibrated - 0.005, 0.03), (calibrated, skin)
  # The 'ict' layout's landmarks as its maps are read (the jaw from the face around it,
  # `landmark_taps`): the world's ground truth and the bundled model's output. Under 3%, within
  # a tenth of a point of the skin points themselves.
  from prnet_jax.faces import landmark_taps
  read = floor(landmark_taps.readout_on('ict', model.mean), faces)
  assert read < 0.03 and abs(read - skin) < 0.001 + abs(calibrated - skin) / 10, (read, skin)
