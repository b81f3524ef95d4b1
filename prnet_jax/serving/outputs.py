"""Writers for prediction results: meshes, landmarks, pose, depth and an overlay picture.

For an image `photo.jpg` and output prefix `out/photo`, face k gives

  out/photo_face{k}.obj              mesh with vertex colours
  out/photo_face{k}_textured.obj     mesh with UV coordinates + .mtl + _texture.png (UV texture)
  out/photo_face{k}.ply              mesh with vertex colours (binary-free ASCII PLY)
  out/photo_face{k}_landmarks.txt    68 x (x y z), image pixels
  out/photo_face{k}_landmarks.json   and JSON with box, pose, camera matrix
  out/photo_face{k}_pose.json        yaw, pitch, roll (degrees), camera matrix
  out/photo_face{k}_posmap.npy       the UV position map (R, R, 3) float32, image pixels
and for the image: out/photo_depth.png (nearest face surface, brighter = nearer, 16-bit) and
out/photo_overlay.png (landmarks, dense points, a pose box per face). `outputs` picks which
(OUTPUTS names them: obj, textured, ply, landmarks, pose, posmap, depth, overlay).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from prnet_jax.data import mesh_io
from prnet_jax.geometry import render, transforms


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


class Mesh(NamedTuple):
  """A face mesh: (N, 3) vertices (image frame), (T, 3) triangles, (N, 3) colours in [0, 1] and
  the (N,) flat pixel of each vertex in its `resolution`-px UV map."""
  vertices: np.ndarray
  triangles: np.ndarray
  colors: np.ndarray
  face_indices: np.ndarray
  resolution: int


def upsample_map(position_map: np.ndarray, resolution: int) -> np.ndarray:
  """(R, R, C) map -> (resolution, resolution, C), bilinear over pixel centres (edges held)."""
  r = position_map.shape[0]
  c = (np.arange(resolution) + 0.5) * r / resolution - 0.5
  y, x = np.meshgrid(np.clip(c, 0, r - 1), np.clip(c, 0, r - 1), indexing='ij')
  x0 = np.minimum(np.floor(x).astype(np.int64), r - 2)
  y0 = np.minimum(np.floor(y).astype(np.int64), r - 2)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  m = np.asarray(position_map, np.float64)
  top = m[y0, x0] * (1 - fx) + m[y0, x0 + 1] * fx
  bottom = m[y0 + 1, x0] * (1 - fx) + m[y0 + 1, x0 + 1] * fx
  return (top * (1 - fy) + bottom * fy).astype(position_map.dtype)


def dense_mesh(face, image: np.ndarray, assets) -> Mesh:
  """The face's mesh from its position map resampled to `assets` (the same UV layout at a
  higher resolution: ~36k vertices at 256 px where a 64 px map gives ~2k), coloured from the
  image. Only pixels whose four taps are the map's own face pixels (trained) are kept."""
  from prnet_jax.faces.uv_assets import grid_triangles
  r, big = face.position_map.shape[0], assets.resolution
  trained = np.zeros(r * r, bool)
  trained[face.face_indices] = True
  trained = trained.reshape(r, r)
  c = np.clip((np.arange(big) + 0.5) * r / big - 0.5, 0, r - 1)
  lo = np.minimum(np.floor(c).astype(np.int64), r - 2)
  taps_ok = np.ones((big, big), bool)
  for dy in (0, 1):
    for dx in (0, 1):
      taps_ok &= trained[(lo + dy)[:, None], (lo + dx)[None, :]]
  mask = (np.asarray(assets.face_mask) > 0) & taps_ok
  face_indices = np.flatnonzero(mask.reshape(-1))
  pos = upsample_map(np.asarray(face.position_map, np.float32), big)
  vertices = pos.reshape(-1, 3)[face_indices]
  colors = np.asarray(transforms.bilinear_sample(
      jnp.asarray(image, jnp.float32), jnp.asarray(vertices[:, 0]), jnp.asarray(vertices[:, 1])))
  return Mesh(vertices.astype(np.float32), grid_triangles(mask),
              np.clip(colors / 255.0, 0, 1).astype(np.float32), face_indices.astype(np.int32), big)


def own_mesh(face) -> Mesh:
  return Mesh(face.vertices, face.triangles, face.colors, face.face_indices,
              face.position_map.shape[0])


OUTPUTS = ('obj', 'textured', 'ply', 'landmarks', 'pose', 'posmap', 'depth', 'overlay')


def parse_outputs(spec: str) -> tuple[str, ...]:
  """'obj,landmarks' -> ('obj', 'landmarks'); 'all' -> OUTPUTS; ValueError names unknown ones."""
  names = tuple(n.strip() for n in spec.split(',') if n.strip())
  if names == ('all',):
    return OUTPUTS
  unknown = [n for n in names if n not in OUTPUTS]
  if unknown or not names:
    raise ValueError(f'unknown output(s) {unknown or [spec]}; choose from {", ".join(OUTPUTS)} '
                     f'or all')
  return names


def uv_texture(face, image: np.ndarray, size: Optional[int] = None) -> np.ndarray:
  """(size, size, 3) uint8: the image sampled at the face's position map resampled to `size`
  px (bilinear); None or the map's own size gives the face's own `uv_texture`."""
  r = face.position_map.shape[0]
  if not size or size == r:
    return face.uv_texture
  pos = upsample_map(np.asarray(face.position_map, np.float32), size)
  tex = transforms.bilinear_sample(jnp.asarray(image, jnp.float32), jnp.asarray(pos[..., 0]),
                                   jnp.asarray(pos[..., 1]))
  return np.clip(np.round(np.asarray(tex)), 0, 255).astype(np.uint8)


def write_outputs(faces: Sequence, image: np.ndarray, prefix: str,
                  meshes: Optional[Sequence[Mesh]] = None, outputs: Sequence[str] = OUTPUTS,
                  texture_size: Optional[int] = None) -> list[str]:
  """Writes the files of the module docstring that `outputs` names; returns their paths.
  `meshes`: one per face to write instead of the faces' own (e.g. `dense_mesh`);
  `texture_size`: the textured mesh's texture side (None: the position map's)."""
  from PIL import Image
  unknown = set(outputs) - set(OUTPUTS)
  if unknown:
    raise ValueError(f'unknown outputs {sorted(unknown)}; choose from {OUTPUTS}')
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  written = []
  for k, f in enumerate(faces):
    base = f'{prefix}_face{k}'
    m = own_mesh(f) if meshes is None else meshes[k]
    if 'obj' in outputs:
      mesh_io.write_obj(base + '.obj', m.vertices, m.triangles, colors=m.colors)
      written.append(base + '.obj')
    if 'textured' in outputs:
      r = m.resolution
      # UV of each face vertex: its pixel centre in the map, v up (as .obj expects); the
      # texture covers the same UV square at any size.
      face_pixels = np.stack(np.unravel_index(m.face_indices, (r, r)), -1)
      uv = np.stack([(face_pixels[:, 1] + 0.5) / r, 1 - (face_pixels[:, 0] + 0.5) / r], -1)
      mesh_io.write_obj(base + '_textured.obj', m.vertices, m.triangles, uv=uv,
                        texture=uv_texture(f, image, texture_size).astype(np.float32) / 255.0)
      written += [base + s for s in ('_textured.obj', '_textured.mtl', '_textured.png')]
    if 'ply' in outputs:
      mesh_io.write_ply(base + '.ply', m.vertices, m.triangles, m.colors)
      written.append(base + '.ply')
    if 'landmarks' in outputs:
      np.savetxt(base + '_landmarks.txt', f.landmarks, fmt='%.3f')
      with open(base + '_landmarks.json', 'w') as fh:
        json.dump(f.to_json(), fh, indent=1)
      written += [base + '_landmarks.txt', base + '_landmarks.json']
    if 'pose' in outputs:
      with open(base + '_pose.json', 'w') as fh:
        js = f.to_json()
        json.dump({k2: js[k2] for k2 in ('yaw_deg', 'pitch_deg', 'roll_deg', 'camera_matrix')},
                  fh, indent=1)
      written.append(base + '_pose.json')
    if 'posmap' in outputs:
      np.save(base + '_posmap.npy', np.asarray(f.position_map, np.float32))
      written.append(base + '_posmap.npy')
  if 'depth' in outputs:
    depth = scale_depth(depth_image(faces, image.shape[0], image.shape[1]), 1000, 65535)
    Image.fromarray(depth.astype(np.uint16)).save(prefix + '_depth.png')
    written.append(prefix + '_depth.png')
  if 'overlay' in outputs:
    overlay(image, faces).save(prefix + '_overlay.png')
    written.append(prefix + '_overlay.png')
  return written

