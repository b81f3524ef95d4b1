"""Writers for prediction results: meshes, landmarks, pose, depth and an overlay picture.

For an image `photo.jpg` and output prefix `out/photo`, face k gives

  out/photo_face{k}.obj              mesh with vertex colours
  out/photo_face{k}_textured.obj     mesh with UV coordinates + .mtl + _texture.png (UV texture)
  out/photo_face{k}.ply              mesh with vertex colours (binary-free ASCII PLY)
  out/photo_face{k}_landmarks.txt    68 x (x y z), image pixels
  out/photo_face{k}_landmarks.json   and JSON with box, pose, camera matrix
  out/photo_face{k}_pose.json        yaw, pitch, roll (degrees), camera matrix
and for the image: out/photo_depth.png (nearest face surface, brighter = nearer, 16-bit) and
out/photo_overlay.png (landmarks, dense points, a pose box per face).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from prnet_jax.data import mesh_io
from prnet_jax.geometry import render


def depth_image(faces: Sequence, height: int, width: int) -> np.ndarray:
  """(H, W) float32 depth (z, larger = nearer, 0 = background) of all faces' meshes."""
  depth = np.zeros((height, width), np.float32)
  for f in faces:
    v = f.vertices.astype(np.float32).copy()
    zmin = v[:, 2].min()
    v[:, 2] -= zmin - 1.0  # > 0 on the face
    windows, triangles = render.plan_windows_within(v, f.triangles,
                                                    render.BUDGET_PER_PIXEL * height * width)
    raster = render.rasterize(jnp.asarray(v), triangles, height, width, windows)
    d = np.where(np.asarray(raster.mask), np.asarray(raster.depth), 0.0)
    depth = np.maximum(depth, d)
  return depth


def scale_depth(depth: np.ndarray, low: float, high: float) -> np.ndarray:
  """Depth (0 = background) stretched so the face spans [low, high] (nearest = high); the
  background stays 0. Returns float64."""
  on = depth > 0
  if not on.any():
    return np.zeros(depth.shape)
  lo, hi = depth[on].min(), depth[on].max()
  return np.where(on, low + (high - low) * (depth - lo) / max(hi - lo, 1e-6), 0.0)


def pose_box(face, size: float = 1.0) -> np.ndarray:
  """(8, 2) image points of a cube around the face in canonical space, posed by its camera."""
  c = face.vertices.mean(0)
  half = size * 0.5 * np.ptp(face.landmarks[:, 0])
  cam = face.camera_matrix.astype(np.float64)
  r = cam[:, :3] / np.linalg.norm(cam[:, :3], axis=0).mean()
  corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
  pts = corners * half @ r.T * np.array([1, -1, 1])  # camera is y up; the image is y down
  return (pts + c)[:, :2]


def overlay(image: np.ndarray, faces: Sequence):
  """A PIL image: dense points (subsampled), 68 landmarks and a pose box per face."""
  from PIL import Image, ImageDraw
  im = Image.fromarray(image).convert('RGB')
  d = ImageDraw.Draw(im)
  scale = max(image.shape[:2]) / 400
  for f in faces:
    step = max(1, len(f.vertices) // 3000)
    for x, y in f.vertices[::step, :2]:
      d.point((float(x), float(y)), fill=(80, 160, 255))
    b = pose_box(f)
    for i in range(8):
      for j in range(i + 1, 8):
        if bin(i ^ j).count('1') == 1:
          d.line([tuple(b[i]), tuple(b[j])], fill=(255, 220, 0), width=max(1, int(scale)))
    r = max(1.5, 1.5 * scale)
    for x, y in f.landmarks[:, :2]:
      d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 40, 40))
  return im


def write_outputs(faces: Sequence, image: np.ndarray, prefix: str) -> list[str]:
  """Writes every file named in the module docstring; returns their paths."""
  from PIL import Image
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  written = []
  for k, f in enumerate(faces):
    base = f'{prefix}_face{k}'
    mesh_io.write_obj(base + '.obj', f.vertices, f.triangles, colors=f.colors)
    r = f.position_map.shape[0]
    # UV of each face vertex: its pixel centre in the map, v up (as .obj expects).
    face_pixels = np.stack(np.unravel_index(f.face_indices, (r, r)), -1)
    uv = np.stack([(face_pixels[:, 1] + 0.5) / r, 1 - (face_pixels[:, 0] + 0.5) / r], -1)
    mesh_io.write_obj(base + '_textured.obj', f.vertices, f.triangles, uv=uv,
                      texture=f.uv_texture.astype(np.float32) / 255.0)
    mesh_io.write_ply(base + '.ply', f.vertices, f.triangles, f.colors)
    np.savetxt(base + '_landmarks.txt', f.landmarks, fmt='%.3f')
    with open(base + '_landmarks.json', 'w') as fh:
      json.dump(f.to_json(), fh, indent=1)
    with open(base + '_pose.json', 'w') as fh:
      js = f.to_json()
      json.dump({k2: js[k2] for k2 in ('yaw_deg', 'pitch_deg', 'roll_deg', 'camera_matrix')},
                fh, indent=1)
    written += [base + s for s in ('.obj', '_textured.obj', '_textured.mtl', '_textured.png',
                                   '.ply', '_landmarks.txt', '_landmarks.json', '_pose.json')]
  depth = scale_depth(depth_image(faces, image.shape[0], image.shape[1]), 1000, 65535)
  Image.fromarray(depth.astype(np.uint16)).save(prefix + '_depth.png')
  overlay(image, faces).save(prefix + '_overlay.png')
  return written + [prefix + '_depth.png', prefix + '_overlay.png']

