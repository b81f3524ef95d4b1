"""Florence protocol: .obj scans, rendered views, ICP reconstruction error, the TFDS builder."""

import os

import numpy as np
import pytest
from scipy.spatial import cKDTree

from prnet_jax.data import florence_views as views
from prnet_jax.data import mesh_io
from prnet_jax.data.readers import SampleError
from prnet_jax.evaluation import florence as fl
from prnet_jax.faces.face_model import derive_uv_assets
from prnet_jax.faces.procedural_face import procedural_face_model


@pytest.fixture(scope='module')
def face():
  m = procedural_face_model()
  return m, derive_uv_assets(m, 256), m.uv_renderer(256)


def write_textured_scan(path, m):
  """The embedded face as a textured scan: uv = the model's UVs, texture = a colour ramp."""
  yy, xx = np.mgrid[0:64, 0:96] / np.array([63.0, 95.0])[:, None, None]
  texture = np.stack([xx, yy, 0.5 * np.ones_like(xx)], -1)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mesh_io.write_obj(path, m.mean, m.triangles, uv=m.uv, texture=texture)
  return texture


def test_obj_with_texture_round_trips(tmp_path, face):
  m = face[0]
  texture = write_textured_scan(str(tmp_path / 'scan.obj'), m)
  scan = mesh_io.load_obj(str(tmp_path / 'scan.obj'))
  np.testing.assert_allclose(scan.vertices, m.mean, atol=1e-4)
  np.testing.assert_array_equal(scan.triangles, m.triangles)
  # Colours are the texture at each vertex's uv (v up): the ramp gives (u, 1 - v) back.
  tex8 = np.round(texture * 255) / 255
  expect = np.stack([m.uv[:, 0], 1 - m.uv[:, 1]], -1)
  np.testing.assert_allclose(scan.colors[:, :2], expect, atol=0.02)
  np.testing.assert_allclose(scan.colors[:, 2], tex8[0, 0, 2], atol=1e-3)


def test_obj_polygons_negative_indices_and_vertex_colours(tmp_path):
  p = tmp_path / 'quad.obj'
  p.write_text('# a quad and a triangle\nv 0 0 0 255 0 0\nv 1 0 0 0 255 0\nv 1 1 0 0 0 255\n'
               'v 0 1 0 255 255 255\nvn 0 0 1\nf 1//1 2//1 3//1 4//1\nf -4 -2 -1\n')
  scan = mesh_io.load_obj(str(p))
  np.testing.assert_array_equal(scan.triangles, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
  np.testing.assert_allclose(scan.colors[:2], [[1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize('text,problem', [
    ('v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n', 'out of range'),
    ('v 0 0 0\nv 1 0 0\n', 'no faces'),
    ('v 0 zero 0\nf 1 1 1\n', 'line 1'),
    ('v 0 0 0\nv 1 0 0\nf 1 2\n', 'at least 3'),
])
def test_bad_obj_files_are_named_with_the_problem(tmp_path, text, problem):
  p = tmp_path / 'bad.obj'
  p.write_text(text)
  with pytest.raises(SampleError, match=problem) as e:
    mesh_io.load_obj(str(p))
  assert 'bad.obj' in str(e.value)
  with pytest.raises(SampleError, match='missing'):
    mesh_io.load_obj(str(tmp_path / 'absent.obj'))


def test_view_transform_geometry(face):
  m = face[0]
  opts = views.FlorenceOptions()
  nose = views.nose_tip(m.mean)
  np.testing.assert_allclose(nose, m.mean[m.landmarks[30]], atol=1e-4)  # the nose tip
  t = views.view_transform(nose, 0, 0, opts)
  centre = nose + np.array(opts.centre_offset_mm)
  np.testing.assert_allclose(views.apply_affine(t, centre[None]), [[127.5, 127.5, 0]], atol=1e-9)
  # Frontal: up in the scan is up in the image (rows grow downwards); 1 mm = S / crop_mm px.
  up = views.apply_affine(t, (centre + [0, 10, 0])[None])[0]
  assert up[1] == pytest.approx(127.5 - 10 * 256 / opts.crop_mm)
  # Yaw 90: the nose (forward, +z) goes sideways in the image.
  side = views.apply_affine(views.view_transform(nose, 90, 0, opts), nose[None])[0]
  assert abs(side[0] - 127.5) > 30
  pts = np.random.default_rng(0).normal(0, 50, (10, 3))
  np.testing.assert_allclose(views.apply_affine(views.invert_affine(t), views.apply_affine(t, pts)), pts,
                             atol=1e-9)


def test_aligned_error_matches_a_kdtree_reference():
  rng = np.random.default_rng(1)
  pred = rng.uniform(-80, 80, (3000, 3))
  gt = rng.uniform(-80, 80, (1200, 3))
  lms = rng.uniform(-60, 60, (68, 3))
  got = fl.aligned_error(pred, lms, gt)
  ref = cKDTree(pred).query(gt)[0].mean() / np.linalg.norm(lms[36] - lms[45])
  assert got['nme'] == pytest.approx(ref, rel=1e-5)


def oracle_prediction(m, assets, renderer, t, distort=None):
  """The position map a perfect network would output for the view `t` (z min at 0)."""
  pos = np.array(renderer(views.apply_affine(t, m.mean).astype(np.float32)))
  pos[..., 2] -= pos[..., 2].min()
  if distort is not None:
    pos = distort(pos)
  return assets.vertices(pos), assets.landmarks(pos)


@pytest.mark.slow(reason='ICP over many views')
def test_reconstruction_error_is_small_for_the_truth_and_grows_with_distortion(face):
  m, assets, renderer = face
  opts = views.FlorenceOptions(max_points=16000, icp_points=2000)
  nose = views.nose_tip(m.mean)
  gt = views.ground_truth_points(mesh_io.Scan(m.mean, m.triangles, m.albedo), nose, opts)
  for yaw, pitch in ((0, 20), (60, -15)):
    t = views.view_transform(nose, yaw, pitch, opts)
    good = fl.reconstruction_error(*oracle_prediction(m, assets, renderer, t), gt, nose, t, opts)
    # The truth, sampled on the UV grid: sub-millimetre; rigid ICP (scale stays 1), converged
    # before the cap; interocular ~ the model's.
    assert good['nme'] < 0.01 and good['error_mm'] < 1.0
    assert good['scale'] == 1.0 and good['icp_iterations'] < opts.icp_iterations
    iod = np.linalg.norm(m.mean[m.landmarks[36]] - m.mean[m.landmarks[45]])
    assert good['interocular_mm'] == pytest.approx(iod, rel=0.01)
    # A flatter face (depth x 0.6) and a face 10% too large are clearly worse reconstructions
    # (with a fitted scale the large one scored as well as the truth).
    flat = fl.reconstruction_error(*oracle_prediction(
        m, assets, renderer, t, lambda p: p * [1, 1, 0.6]), gt, nose, t, opts)
    big = fl.reconstruction_error(*oracle_prediction(
        m, assets, renderer, t, lambda p: p * 1.1), gt, nose, t, opts)
    assert flat['nme'] > 2 * good['nme'] + 0.005
    assert big['nme'] > 2 * good['nme'] and big['error_mm'] > 2 * good['error_mm']