"""What the face worlds share: the sample record, the 300W-LP pose-and-crop draw, and
crop-frame normals."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax.geometry import transforms
from prnet_jax.geometry.render import vertex_normals


@dataclasses.dataclass(frozen=True)
class Sample:
  """One synthetic face. Shapes for image size S and UV resolution R."""
  image: np.ndarray          # (S, S, 3) uint8
  position_map: np.ndarray   # (R, R, 3) float32, crop pixels (x, y, z), 0 outside the mesh
  landmarks: np.ndarray      # (68, 3) float32 crop-frame 3D landmarks
  pose: np.ndarray           # (7,) Pose_Para of the original frame: pitch, yaw, roll, t, s
  crop_transform: np.ndarray  # (3, 3) original frame -> crop similarity
  shape_para: np.ndarray     # (Ks,)
  exp_para: np.ndarray       # (Ke,)
  seed: int


def random_pose_and_crop(rng: np.random.Generator, vertices: np.ndarray,
                         landmarks: np.ndarray, image_size: int,
                         max_angles=(30.0, 90.0, 30.0), face_px=(90.0, 200.0), warp=None):
  """A pose over the 300W-LP range (pitch, yaw, roll within +-`max_angles` degrees; the face
  `face_px` pixels across its landmarks, anywhere in a canvas of twice `image_size`) and the
  300W-LP ground-truth crop of `vertices` (V, 3) under it: (Pose_Para (7,),
  transforms.PositionMapSample). `warp(vertices, angles)`, if given, deforms the model-frame
  vertices before the procedure (a perspective camera, `ict_world`)."""
  p, y, r = max_angles
  angles = np.deg2rad([rng.uniform(-p, p), rng.uniform(-y, y), rng.uniform(-r, r)])
  if warp is not None:
    vertices = warp(vertices, angles)
  scale = rng.uniform(*face_px) / np.ptp(vertices[landmarks, 0])
  canvas = 2 * image_size
  t = [rng.uniform(0.3, 0.7) * canvas, rng.uniform(0.3, 0.7) * canvas, 0.0]
  pose = np.concatenate([angles, t, [scale]])
  gt = transforms.position_map_from_3dmm(vertices, pose, canvas, landmarks, image_size,
                                       transforms.random_perturbation(rng))
  return pose, gt


def crop_frame_normals(vertices: np.ndarray, angles, triangles: jax.Array) -> np.ndarray:
  """(V, 3) unit normals of the posed mesh in the crop frame (rotated, then y flipped like
  the vertices)."""
  r = transforms.angles_to_matrix(angles)
  return np.asarray(vertex_normals(jnp.asarray(vertices @ r.T, jnp.float32),
                                   triangles)) * np.array([1, -1, 1], np.float32)
