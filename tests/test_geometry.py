"""Pose, crop and warp math; position maps from 3DMM parameters against a step-by-step reference."""

import jax.numpy as jnp
import numpy as np
import pytest

from prnet_jax.geometry import transforms


def fit_similarity(src, dst):
  """Least-squares 2D similarity [[a, -b, tx], [b, a, ty]] mapping src -> dst (reference for
  skimage's estimate_transform('similarity'))."""
  rows, rhs = [], []
  for (x, y), (u, v) in zip(src, dst):
    rows += [[x, -y, 1, 0], [y, x, 0, 1]]
    rhs += [u, v]
  a, b, tx, ty = np.linalg.lstsq(np.array(rows, float), np.array(rhs, float), rcond=None)[0]
  return np.array([[a, -b, tx], [b, a, ty], [0, 0, 1]])


def test_rotation_matches_3ddfa_matrices_and_inverts():
  pitch, yaw, roll = 0.3, -0.7, 0.2
  r = transforms.angles_to_matrix([pitch, yaw, roll])
  c, s = np.cos, np.sin
  rx = np.array([[1, 0, 0], [0, c(pitch), s(pitch)], [0, -s(pitch), c(pitch)]])
  ry = np.array([[c(yaw), 0, -s(yaw)], [0, 1, 0], [s(yaw), 0, c(yaw)]])
  rz = np.array([[c(roll), s(roll), 0], [-s(roll), c(roll), 0], [0, 0, 1]])
  np.testing.assert_allclose(r, rx @ ry @ rz, atol=1e-12)
  np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
  assert np.linalg.det(r) == pytest.approx(1.0)
  rng = np.random.RandomState(0)
  for _ in range(20):
    angles = rng.uniform([-1.5, -1.5, -1.5], [1.5, 1.5, 1.5])
    np.testing.assert_allclose(transforms.matrix_to_angles(transforms.angles_to_matrix(angles)),
                               angles, atol=1e-9)


def test_positive_yaw_turns_the_nose_to_image_left():
  nose = np.array([[0.0, 0.0, 100.0]])
  posed = transforms.transform_3ddfa(nose, 1.0, [0, np.deg2rad(40), 0], [0, 0, 0])
  assert posed[0, 0] < -50


def test_landmark_box_follows_face3d():
  kpt = np.array([[10.7, 20.2], [30.9, 60.5], [15, 40]])
  box = transforms.landmark_box(kpt)  # int truncation: box [10, 30] x [20, 60]
  np.testing.assert_allclose(box.center, [20, 40])
  assert box.size == int(30 * 1.5)
  box = transforms.landmark_box(kpt, perturb=(0.1, -0.1, 1.1))
  np.testing.assert_allclose(box.center, [23, 37])
  assert box.size == pytest.approx(45 * 1.1)


def test_crop_transform_equals_three_point_similarity_estimate():
  box = transforms.CropBox(np.array([120.3, 87.9]), 173.4)
  t = transforms.crop_transform(box, 256)
  cx, cy, s = box.center[0], box.center[1], box.size
  src = [[cx - s / 2, cy - s / 2], [cx - s / 2, cy + s / 2], [cx + s / 2, cy - s / 2]]
  np.testing.assert_allclose(t, fit_similarity(src, [[0, 0], [0, 255], [255, 0]]), atol=1e-9)


def test_crop_then_uncrop_returns_the_points():
  rng = np.random.RandomState(1)
  pts = rng.uniform(-50, 400, (100, 3))
  for t in (transforms.crop_transform(transforms.CropBox(np.array([200., 150.]), 180.), 256),
            transforms.similarity(1.7, 0.4, (12.0, -30.0))):
    back = transforms.transform_points(transforms.invert(t), transforms.transform_points(t, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)
  # z is scaled by the similarity's scale
  t = transforms.similarity(2.0, 0.3, (0, 0))
  assert transforms.transform_points(t, pts)[0, 2] == pytest.approx(2 * pts[0, 2])
  # JAX arrays go through the same code
  np.testing.assert_allclose(np.asarray(transforms.transform_points(jnp.asarray(t), jnp.asarray(
      pts))), transforms.transform_points(t, pts), rtol=1e-5, atol=1e-3)


def test_official_inference_crops():
  # PRNet's api.py, PRN.process: its own detector's box ...
  box = transforms.box_crop([100, 50, 200, 170], 'detector')  # w 100, h 120 -> old size 110
  np.testing.assert_allclose(box.center, [150, 110 + 0.14 * 110])
  assert box.size == int(110 * 1.58)
  # ... a box passed as image_info=[left, right, top, bottom] ...
  box = transforms.box_crop([100, 50, 200, 170], 'image_info')
  np.testing.assert_allclose(box.center, [150, 110])
  assert box.size == int(110 * 1.6) == 176
  # ... and 68 landmarks as image_info: the same rule on their bounding box.
  kpt = np.array([[10.0, 20.0], [50.0, 90.0]])
  box = transforms.landmark_crop(kpt)
  np.testing.assert_allclose(box.center, [30, 55])
  assert box.size == int(55 * 1.6)
  with pytest.raises(ValueError, match="box convention must be one of"):
    transforms.box_crop([100, 50, 200, 170], 'dlib')


def test_warp_image_moves_a_point_where_the_transform_sends_it():
  img = np.zeros((64, 64, 3), np.float32)
  img[20, 10] = [1, 0.5, 0.25]
  t = transforms.similarity(1.0, 0.0, (7.0, 5.0))
  out = np.asarray(transforms.warp_image(img, t, 64, 64))
  assert out[25, 17].tolist() == [1, 0.5, 0.25]
  assert out.sum() == pytest.approx(1.75)
  np.testing.assert_allclose(np.asarray(transforms.warp_image(img, np.eye(3), 64, 64)), img)
  # Scaling by 2 maps input (10, 20) to (20, 40); bilinear keeps the peak there.
  out = np.asarray(transforms.warp_image(img, transforms.similarity(2.0, 0.0, (0, 0)), 64, 64))
  assert np.unravel_index(out[..., 0].argmax(), (64, 64)) == (40, 20)


def face3d_reference(vertices, pose, h, kpt_ind, perturb):
  """face3d examples/8_generate_posmap_300WLP.py, steps 2-3, written out independently."""
  s, angles, t = pose[6], pose[:3], pose[3:6]
  x, y, z = angles
  rx = np.array([[1, 0, 0], [0, np.cos(x), np.sin(x)], [0, -np.sin(x), np.cos(x)]])
  ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
  rz = np.array([[np.cos(z), np.sin(z), 0], [-np.sin(z), np.cos(z), 0], [0, 0, 1]])
  image_vertices = s * vertices @ (rx @ ry @ rz).T + t[None]
  image_vertices[:, 1] = h - image_vertices[:, 1] - 1
  kpt = image_vertices[kpt_ind].astype(np.int32)
  left, right, top, bottom = kpt[:, 0].min(), kpt[:, 0].max(), kpt[:, 1].min(), kpt[:, 1].max()
  center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
  old_size = (right - left + bottom - top) / 2
  size = int(old_size * 1.5)
  marg = old_size * 0.1
  center = center + np.array([perturb[0], perturb[1]]) / 0.1 * marg
  size = size * perturb[2]
  src = [[center[0] - size / 2, center[1] - size / 2], [center[0] - size / 2, center[1] + size / 2],
         [center[0] + size / 2, center[1] - size / 2]]
  tform = fit_similarity(src, [[0, 0], [0, 255], [255, 0]])
  position = image_vertices.copy()
  position[:, 2] = 1
  position = position @ tform.T
  position[:, 2] = image_vertices[:, 2] * tform[0, 0]
  position[:, 2] -= position[:, 2].min()
  return position


def test_position_map_procedure_matches_face3d_steps():
  rng = np.random.RandomState(3)
  vertices = rng.normal(0, 50, (300, 3))
  kpt_ind = rng.choice(300, 68, replace=False)
  pose = np.array([0.2, -0.9, 0.1, 220.0, 180.0, 10.0, 0.9])
  perturb = (0.05, -0.08, 1.07)
  got = transforms.position_map_from_3dmm(vertices, pose, 450, kpt_ind, 256, perturb)
  ref = face3d_reference(vertices, pose, 450, kpt_ind, perturb)
  np.testing.assert_allclose(got.positions, ref, atol=1e-6)
  assert got.positions[:, 2].min() == 0.0
  # crop transform undoes to the original image frame
  back = transforms.transform_points(transforms.invert(got.transform), got.positions[:, :2])
  np.testing.assert_allclose(back, got.image_vertices[:, :2], atol=1e-6)


def test_bad_pose_is_rejected():
  with pytest.raises(ValueError, match='Pose_Para must be 7 finite numbers'):
    transforms.position_map_from_3dmm(np.zeros((70, 3)), [0, np.nan, 0, 0, 0, 0, 1], 100,
                                    np.arange(68))


def test_warp_image_matches_scipy_map_coordinates():
  from scipy import ndimage
  rng = np.random.RandomState(0)
  img = rng.uniform(0, 1, (40, 50, 3))
  t = transforms.similarity(1.3, 0.5, (-7.0, 4.0))
  out = np.asarray(transforms.warp_image(img, t, 45, 35))
  t_inv = np.linalg.inv(t)
  ys, xs = np.mgrid[0:45, 0:35].astype(np.float64)
  sx = t_inv[0, 0] * xs + t_inv[0, 1] * ys + t_inv[0, 2]
  sy = t_inv[1, 0] * xs + t_inv[1, 1] * ys + t_inv[1, 2]
  ref = np.stack([ndimage.map_coordinates(img[..., c], [sy, sx], order=1, mode='constant',
                                          cval=0.0) for c in range(3)], -1)
  inside = (sx >= 0) & (sx <= 49) & (sy >= 0) & (sy <= 39)
  np.testing.assert_allclose(out[inside], ref[inside], atol=1e-5)
  assert np.all(out[(sx < -1) | (sx > 50) | (sy < -1) | (sy > 40)] == 0)
