"""UV assets: the official files load into one typed object; errors name file and problem."""

import dataclasses
import os
import shutil

import numpy as np
import pytest

from prnet_jax.faces.uv_assets import AssetError, grid_triangles, load_uv_assets


def test_official_assets_load(official_uv_dir):
  a = load_uv_assets(official_uv_dir)
  assert a.resolution == 256
  assert a.kpt_uv.shape == (68, 2) and a.kpt_uv.dtype == np.int32
  assert a.face_indices.shape == (43867,)
  assert a.canonical_vertices.shape == (43867, 3)
  assert set(np.unique(a.face_mask)) == {0.0, 1.0}
  # Relative weights 16 : 4 : 3 (as rounded in the PNG), and only inside the face.
  w = a.loss_weights
  assert w.max() == pytest.approx(16.0)
  values = set(np.round(np.unique(w[w > 0]).astype(np.float64), 2).tolist())
  assert {16.0, 4.02, 3.01} <= values
  assert np.all(w[a.face_mask == 0] == 0)
  # Each landmark pixel carries the landmark weight; landmarks are pos[v, u].
  assert np.all(w[a.kpt_uv[:, 1], a.kpt_uv[:, 0]] == pytest.approx(16.0))
  # Grid triangles index face pixels and cover the face.
  assert a.triangles.max() < 43867 and len(a.triangles) > 80000


def test_landmark_and_vertex_gathers_follow_official_conventions(official_uv_dir):
  a = load_uv_assets(official_uv_dir)
  pos = np.random.RandomState(0).randn(2, 256, 256, 3)
  k = a.landmarks(pos)
  assert k.shape == (2, 68, 3)
  np.testing.assert_array_equal(k[1, 5], pos[1, a.kpt_uv[5, 1], a.kpt_uv[5, 0]])
  v = a.vertices(pos)
  assert v.shape == (2, 43867, 3)
  np.testing.assert_array_equal(v[0], pos[0].reshape(-1, 3)[a.face_indices])


def test_save_then_load_round_trips(official_uv_dir, tmp_path):
  a = load_uv_assets(official_uv_dir)
  a.save(str(tmp_path))
  b = load_uv_assets(str(tmp_path))
  for field in ('kpt_uv', 'face_indices', 'face_mask', 'weight_mask', 'triangles'):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  np.testing.assert_allclose(a.canonical_vertices, b.canonical_vertices)



def with_subpixel(a, seed=0):
  """The assets with landmarks moved to random sub-pixel positions near their pixels."""
  offset = np.random.default_rng(seed).uniform(-0.49, 0.49, (68, 2))
  sub = np.clip(a.kpt_uv + offset, 0, a.resolution - 1).astype(np.float32)
  return dataclasses.replace(a, kpt_uv=np.round(sub).astype(np.int32), kpt_uv_subpixel=sub)


def test_subpixel_landmarks_are_bilinear_samples_and_round_trip(official_uv_dir, tmp_path):
  a = with_subpixel(load_uv_assets(official_uv_dir))
  # On a map linear in (u, v) the bilinear sample is exact: the map's value at the point.
  u, v = np.meshgrid(np.arange(256.0), np.arange(256.0))
  pos = np.stack([2 * u + 3 * v + 1, -u + 0.5 * v, u * 0 + 7], -1)[None].repeat(2, 0)
  k, sub = a.landmarks(pos), a.kpt_uv_subpixel.astype(np.float64)
  expected = np.stack([2 * sub[:, 0] + 3 * sub[:, 1] + 1, -sub[:, 0] + 0.5 * sub[:, 1],
                       np.full(68, 7.0)], -1)
  np.testing.assert_allclose(k[1], expected, rtol=1e-6, atol=1e-4)
  assert sum(w for _, _, w in a.bilinear_taps()) == pytest.approx(np.ones(68))
  a.save(str(tmp_path))
  b = load_uv_assets(str(tmp_path))
  np.testing.assert_allclose(b.kpt_uv_subpixel, a.kpt_uv_subpixel, atol=1e-6)
  np.testing.assert_array_equal(b.kpt_uv, a.kpt_uv)
  # Saving assets without sub-pixel positions over them leaves the official meaning.
  load_uv_assets(official_uv_dir).save(str(tmp_path))
  assert load_uv_assets(str(tmp_path)).kpt_uv_subpixel is None


def test_subpixel_positions_must_round_to_the_landmark_pixels(official_uv_dir):
  a = with_subpixel(load_uv_assets(official_uv_dir))
  with pytest.raises(AssetError, match='rounding'):
    dataclasses.replace(a, kpt_uv=a.kpt_uv + 1)

def test_grid_triangles_on_a_known_mask():
  mask = np.zeros((4, 5))
  mask[1:3, 1:4] = 1  # 2x3 pixels -> 2 cells -> 4 triangles
  tri = grid_triangles(mask)
  assert tri.shape == (4, 3)
  # vertices numbered row-major over the 6 face pixels: 0 1 2 / 3 4 5
  assert {tuple(sorted(t)) for t in tri} == {(0, 1, 3), (1, 3, 4), (1, 2, 4), (2, 4, 5)}


@pytest.fixture
def copied_assets(official_uv_dir, tmp_path):
  d = tmp_path / 'uv'
  shutil.copytree(official_uv_dir, d)
  return d


def test_missing_file_is_named(copied_assets):
  os.remove(copied_assets / 'uv_kpt_ind.txt')
  with pytest.raises(AssetError, match=r'uv_kpt_ind.txt: missing UV asset file'):
    load_uv_assets(str(copied_assets))


def test_face_indices_inconsistent_with_mask_is_named(copied_assets):
  ind = np.loadtxt(copied_assets / 'face_ind.txt')[:-5]
  np.savetxt(copied_assets / 'face_ind.txt', ind)
  with pytest.raises(AssetError, match=r'face_ind.txt: 43862 indices do not equal the 43867'):
    load_uv_assets(str(copied_assets))


def test_corrupt_png_and_bad_keypoints_are_named(copied_assets):
  (copied_assets / 'uv_face_mask.png').write_bytes(b'not a png')
  with pytest.raises(AssetError, match=r'uv_face_mask.png: cannot read image'):
    load_uv_assets(str(copied_assets))


def test_keypoints_out_of_range(copied_assets):
  kpt = np.loadtxt(copied_assets / 'uv_kpt_ind.txt')
  kpt[0, 3] = 300
  np.savetxt(copied_assets / 'uv_kpt_ind.txt', kpt)
  with pytest.raises(AssetError, match=r'uv_kpt_ind.txt: landmark positions outside'):
    load_uv_assets(str(copied_assets))


def test_a_bad_subpixel_file_is_named(copied_assets):
  np.savetxt(copied_assets / 'uv_kpt_subpixel.txt', np.zeros((2, 60)))
  with pytest.raises(AssetError, match=r'uv_kpt_subpixel.txt: expected 2x68'):
    load_uv_assets(str(copied_assets))


def test_the_shipped_official_assets_are_the_official_uv_data_unchanged():
  from conftest import shared_path
  from prnet_jax.faces import catalog
  official = shared_path('prnet-official', 'uv-data')
  shipped = sorted(os.listdir(catalog.OFFICIAL_FOLDER))
  assert shipped == sorted(f for f in os.listdir(official) if f in shipped) and len(shipped) == 7
  for name in shipped:
    with open(os.path.join(official, name), 'rb') as a, \
        open(os.path.join(catalog.OFFICIAL_FOLDER, name), 'rb') as b:
      assert a.read() == b.read(), name
  assets = catalog.uv_assets_for('official', 256)
  assert assets.resolution == 256 and assets.kpt_uv.shape == (68, 2)
