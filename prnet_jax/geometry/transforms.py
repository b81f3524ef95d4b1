"""3DMM pose, projection and crop math, and position maps from fitted 3DMM parameters.

Conventions (3DDFA / face3d, used by 300W-LP and AFLW2000-3D):

* ``Pose_Para = [pitch, yaw, roll, tx, ty, tz, scale]`` (angles in radians);
  ``R = Rx(pitch) @ Ry(yaw) @ Rz(roll)`` with face3d's `angle2matrix_3ddfa` matrices;
* model vertices v (y up) are posed as ``s * v @ R.T + t`` and projected orthographically
  (drop z); image rows grow downwards, so ``y_img = h - 1 - y``;
* similarity transforms are 3x3 matrices acting on homogeneous (x, y, 1) row vectors as
  ``p @ T.T``; z is multiplied by the transform's scale.

`position_map_from_3dmm` follows face3d's `examples/8_generate_posmap_300WLP.py` step by step.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

CROP_FACTOR = 1.5          # 300W-LP ground truth: crop side = 1.5 x landmark box size
BOX_CENTER_SHIFT = 0.14    # inference from a detector's box: centre moved down by 0.14 x size
BOX_SIZE_FACTOR = 1.58     # ... and side 1.58 x size
KPT_SIZE_FACTOR = 1.6      # inference from 68 landmarks or a given box: side 1.6 x size


def angles_to_matrix(angles) -> np.ndarray:
  """(3,) pitch, yaw, roll (radians) -> (3, 3) rotation, 3DDFA convention (Rx @ Ry @ Rz)."""
  x, y, z = (float(a) for a in np.asarray(angles, np.float64).reshape(3))
  cx, sx, cy, sy, cz, sz = np.cos(x), np.sin(x), np.cos(y), np.sin(y), np.cos(z), np.sin(z)
  rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
  ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
  rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
  return rx @ ry @ rz


def matrix_to_angles(r: np.ndarray) -> np.ndarray:
  """Inverse of `angles_to_matrix` for |yaw| < 90 deg: (3, 3) -> (3,) pitch, yaw, roll."""
  r = np.asarray(r, np.float64)
  # R[0, 2] = -sin(yaw); R[1, 2] = sin(pitch) cos(yaw); R[2, 2] = cos(pitch) cos(yaw);
  # R[0, 1] = cos(yaw) sin(roll); R[0, 0] = cos(yaw) cos(roll).
  yaw = np.arcsin(np.clip(-r[0, 2], -1.0, 1.0))
  pitch = np.arctan2(r[1, 2], r[2, 2])
  roll = np.arctan2(r[0, 1], r[0, 0])
  return np.array([pitch, yaw, roll])


def transform_3ddfa(vertices, scale, angles, translation) -> np.ndarray:
  """(V, 3) model vertices -> posed vertices s * v @ R.T + t (orthographic camera frame)."""
  r = angles_to_matrix(angles)
  return (scale * np.asarray(vertices, np.float64) @ r.T
          + np.asarray(translation, np.float64).reshape(1, 3))


def to_image_frame(vertices, height: int) -> np.ndarray:
  """Flips y so that rows grow downwards: y -> height - 1 - y (x and z unchanged)."""
  v = np.array(vertices, np.float64, copy=True)
  v[:, 1] = height - 1 - v[:, 1]
  return v


class CropBox(NamedTuple):
  center: np.ndarray  # (2,) x, y
  size: float


def landmark_box(kpt_xy, perturb: Optional[tuple[float, float, float]] = None) -> CropBox:
  """The 300W-LP crop: landmark bounding box x 1.5, optionally perturbed.

  Args:
    kpt_xy: (68, 2+) landmarks in image pixels. Truncated to integers first, as face3d does.
    perturb: (dx, dy, size_factor) with dx, dy in units of the box size (face3d draws them
      from U(-0.1, 0.1)) and size_factor from U(0.9, 1.1); None for no perturbation.
  """
  kpt = np.asarray(kpt_xy)[:, :2].astype(np.int32)
  left, right = kpt[:, 0].min(), kpt[:, 0].max()
  top, bottom = kpt[:, 1].min(), kpt[:, 1].max()
  center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
  old_size = (right - left + bottom - top) / 2
  size = float(int(old_size * CROP_FACTOR))
  if perturb is not None:
    dx, dy, factor = perturb
    center = center + np.array([dx, dy]) * old_size
    size *= factor
  return CropBox(center, size)


def random_perturbation(rng: np.random.Generator) -> tuple[float, float, float]:
  """face3d's crop perturbation: centre shift U(-0.1, 0.1) x size, side x U(0.9, 1.1)."""
  return (float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.1, 0.1)),
          float(rng.uniform(0.9, 1.1)))


BOX_CONVENTIONS = ('image_info', 'detector', 'crop')


def box_crop(box_ltrb, convention: str) -> CropBox:
  """The official inference crop from a face box (left, top, right, bottom), in one of the two
  conventions of PRNet's `api.py` (`PRN.process`); size = the mean of the box's width and height:

  * 'image_info': the rule for a box the caller passes (`process(image, image_info=[left, right,
    top, bottom])`): centred on the box, side int(1.6 x size); the same rule as for 68 landmarks
    (`landmark_crop`), whose bounding box such a box usually is;
  * 'detector': the rule for the box of PRNet's own dlib face detector (`process(image)`), which
    sits high and tight on the face: centre moved down by 0.14 x size, side int(1.58 x size);
  * 'crop': the box is the crop itself, its corners' pixel centres onto the crop's (an image
    already cropped to the face, as the official demo's `--isDlib False`: the box
    (0, 0, W - 1, H - 1) of an R x R image is the identity).
  """
  left, top, right, bottom = (float(v) for v in box_ltrb)
  old_size = (right - left + bottom - top) / 2
  center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
  if convention == 'image_info':
    return CropBox(center, float(int(old_size * KPT_SIZE_FACTOR)))
  if convention == 'crop':
    return CropBox(center, old_size)
  if convention == 'detector':
    return CropBox(center + np.array([0.0, old_size * BOX_CENTER_SHIFT]),
                   float(int(old_size * BOX_SIZE_FACTOR)))
  raise ValueError(f'box convention must be one of {BOX_CONVENTIONS}, got {convention!r}')


def landmark_crop(kpt_xy) -> CropBox:
  """Official inference crop from 68 landmarks: their bounding box, 'image_info' rule."""
  kpt = np.asarray(kpt_xy, np.float64)[:, :2]
  (left, top), (right, bottom) = kpt.min(0), kpt.max(0)
  return box_crop((left, top, right, bottom), 'image_info')


def crop_transform(box: CropBox, out_size: int) -> np.ndarray:
  """3x3 similarity mapping the square `box` onto [0, out_size - 1]^2 (face3d's corners)."""
  k = (out_size - 1) / box.size
  x0, y0 = box.center[0] - box.size / 2, box.center[1] - box.size / 2
  return np.array([[k, 0, -k * x0], [0, k, -k * y0], [0, 0, 1]], np.float64)


def similarity(scale: float, angle: float, translation) -> np.ndarray:
  """3x3 similarity: rotate by `angle` (radians, image frame), scale, then translate."""
  c, s = scale * np.cos(angle), scale * np.sin(angle)
  tx, ty = translation
  return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]], np.float64)


def invert(t: np.ndarray) -> np.ndarray:
  return np.linalg.inv(np.asarray(t, np.float64))


def transform_points(t, points):
  """Applies a 3x3 similarity to (..., N, 2+) points: x, y mapped; z (if any) x scale.

  Works on NumPy and JAX arrays alike."""
  xp = jnp if isinstance(points, jax.Array) or isinstance(t, jax.Array) else np
  xy = points[..., :2] @ t[:2, :2].T + t[:2, 2]
  if points.shape[-1] == 2:
    return xy
  scale = xp.sqrt(xp.abs(t[0, 0] * t[1, 1] - t[0, 1] * t[1, 0]))
  return xp.concatenate([xy, points[..., 2:3] * scale, points[..., 3:]], -1)


def bilinear_sample(image: jax.Array, x: jax.Array, y: jax.Array, cval: float = 0.0):
  """Samples (H, W, C) `image` at float pixel coordinates x, y (any shape S) -> (S..., C).

  Pixel centres are integers; points outside read `cval` (each of the 4 taps separately)."""
  h, w, c = image.shape
  flat = image.reshape(h * w, c)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  out = 0.0
  for dy in (0, 1):
    for dx in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      wgt = (1 - jnp.abs(x - xi)) * (1 - jnp.abs(y - yi))
      ok = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
      idx = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).astype(jnp.int32)
      tap = jnp.where(ok[..., None], jnp.take(flat, idx, axis=0), cval)
      out = out + wgt[..., None] * tap
  return out


def warp_image(image, t, out_height: int, out_width: int, cval: float = 0.0) -> jax.Array:
  """Resamples `image` (H, W, C) so that output pixel p shows input point T^-1 p (bilinear).

  Equivalent to `skimage.transform.warp(image, T.inverse)`; pixels outside read `cval`."""
  image = jnp.asarray(image, jnp.float32)
  t_inv = jnp.linalg.inv(jnp.asarray(t, jnp.float32))
  ys, xs = jnp.meshgrid(jnp.arange(out_height, dtype=jnp.float32),
                        jnp.arange(out_width, dtype=jnp.float32), indexing='ij')
  src = jnp.stack([xs, ys], -1) @ t_inv[:2, :2].T + t_inv[:2, 2]
  return bilinear_sample(image, src[..., 0], src[..., 1], cval)


def uv_pixels(uv: np.ndarray, resolution: int) -> np.ndarray:
  """(V, 2) UV coordinates in [0, 1] (v up) -> (V, 2) UV-map pixels: u*(R-1), R-1 - v*(R-1)."""
  uv = np.asarray(uv, np.float64)
  return np.stack([uv[:, 0] * (resolution - 1), resolution - 1 - uv[:, 1] * (resolution - 1)],
                  1)


class PositionMapSample(NamedTuple):
  """Everything `position_map_from_3dmm` computes for one fitted face."""
  positions: np.ndarray        # (V, 3) cropped-frame vertex positions (z shifted to min 0)
  image_vertices: np.ndarray   # (V, 3) vertices in the original image frame
  transform: np.ndarray        # (3, 3) original image -> crop similarity
  box: CropBox


def position_map_from_3dmm(vertices: np.ndarray, pose_para, image_height: int,
                           landmark_indices: np.ndarray, out_size: int = 256,
                           perturb: Optional[tuple[float, float, float]] = None
                           ) -> PositionMapSample:
  """face3d's 300W-LP ground-truth procedure, up to the rasterisation into UV space.

  Args:
    vertices: (V, 3) model-space vertices (mean + shape + expression, see `FaceModel.vertices`).
    pose_para: (7,) pitch, yaw, roll, tx, ty, tz, scale.
    image_height: height of the original image (for the y-flip).
    landmark_indices: (68,) vertex indices of the landmarks (crop box).
    out_size: crop side (256).
    perturb: crop perturbation (see `landmark_box`).

  Returns:
    PositionMapSample; render `positions` into UV space with `render.UVRenderer` to obtain
    the position map (`FaceModel`/`uv_assets` provide the renderer).
  """
  pose = np.asarray(pose_para, np.float64).reshape(-1)
  if pose.shape != (7,) or not np.all(np.isfinite(pose)):
    raise ValueError(f'Pose_Para must be 7 finite numbers, got {pose}')
  posed = transform_3ddfa(vertices, pose[6], pose[:3], pose[3:6])
  image_vertices = to_image_frame(posed, image_height)
  box = landmark_box(image_vertices[landmark_indices], perturb)
  t = crop_transform(box, out_size)
  positions = transform_points(t, image_vertices)
  positions[:, 2] -= positions[:, 2].min()
  return PositionMapSample(positions, image_vertices, t, box)
