"""Mesh files: Wavefront `.obj` (read: scans with textures; write: vertex colours or uv +
texture with `.mtl`) and ASCII `.ply`."""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from prnet_jax.data.readers import SampleError
from prnet_jax.geometry import transforms


class Scan(NamedTuple):
  vertices: np.ndarray   # (V, 3) float32, millimetres
  triangles: np.ndarray  # (T, 3) int32
  colors: np.ndarray     # (V, 3) float32 in [0, 1]


def _index(token: str, count: int, path: str, lineno: int) -> int:
  i = int(token)
  i = i - 1 if i > 0 else count + i
  if not 0 <= i < count:
    raise SampleError(path, f'line {lineno}: index {token} out of range ({count} defined)')
  return i


def _texture_path(obj_path: str, mtllib: Optional[str]) -> Optional[str]:
  folder = os.path.dirname(obj_path)
  if mtllib and os.path.isfile(os.path.join(folder, mtllib)):
    with open(os.path.join(folder, mtllib), errors='replace') as f:
      for line in f:
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0] == 'map_Kd':
          return os.path.join(folder, parts[1].strip())
  return None


def _sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
  """(H, W, 3) float texture, (N, 2) uv in [0, 1] with v up -> (N, 3) bilinear samples."""
  h, w = texture.shape[:2]
  x = np.clip(uv[:, 0] % 1.0001, 0, 1) * (w - 1)
  y = (1 - np.clip(uv[:, 1] % 1.0001, 0, 1)) * (h - 1)
  return np.asarray(transforms.bilinear_sample(jnp.asarray(texture), jnp.asarray(x),
                                             jnp.asarray(y)))


def load_obj(path: str) -> Scan:
  """Reads a textured (or vertex-coloured, or plain) Wavefront `.obj` scan.

  Faces may be `f a b c`, `a/t`, `a/t/n` or `a//n`, polygons (fan-triangulated) and negative
  indices. Colours: per-vertex `v x y z r g b` if present, else the `map_Kd` texture of the
  `mtllib` sampled at each vertex's texture coordinate, else mid-grey. Problems raise
  SampleError naming the file (and line)."""
  if not os.path.isfile(path):
    raise SampleError(path, 'scan file missing')
  verts, vcols, tex, tris, tri_tex = [], [], [], [], []
  mtllib = None
  with open(path, errors='replace') as f:
    for lineno, line in enumerate(f, 1):
      parts = line.split()
      if not parts or parts[0].startswith('#'):
        continue
      try:
        if parts[0] == 'v':
          verts.append([float(x) for x in parts[1:4]])
          if len(parts) >= 7:
            vcols.append([float(x) for x in parts[4:7]])
        elif parts[0] == 'vt':
          tex.append([float(x) for x in parts[1:3]])
        elif parts[0] == 'f':
          corners = [c.split('/') for c in parts[1:]]
          if len(corners) < 3:
            raise SampleError(path, f'line {lineno}: a face needs at least 3 vertices')
          vi = [_index(c[0], len(verts), path, lineno) for c in corners]
          ti = [_index(c[1], len(tex), path, lineno) if len(c) > 1 and c[1] else -1
                for c in corners]
          for k in range(1, len(vi) - 1):
            tris.append([vi[0], vi[k], vi[k + 1]])
            tri_tex.append([ti[0], ti[k], ti[k + 1]])
        elif parts[0] == 'mtllib':
          mtllib = line.split(maxsplit=1)[1].strip()
      except (ValueError, IndexError) as e:
        raise SampleError(path, f'line {lineno}: cannot parse {line.strip()[:60]!r} ({e})')
  if not verts or not tris:
    raise SampleError(path, f'no {"vertices" if not verts else "faces"} in the file')
  vertices = np.asarray(verts, np.float32)
  triangles = np.asarray(tris, np.int32)
  if not np.isfinite(vertices).all():
    raise SampleError(path, 'non-finite vertex coordinates')
  colors = np.full((len(vertices), 3), 0.5, np.float32)
  if len(vcols) == len(verts):
    colors = np.asarray(vcols, np.float32)
    colors = colors / 255.0 if colors.max() > 1.0 else colors
  else:
    texture_path = _texture_path(path, mtllib)
    tt = np.asarray(tri_tex, np.int64)
    if texture_path and len(tex) and (tt >= 0).any():
      from PIL import Image
      try:
        with Image.open(texture_path) as im:
          texture = np.asarray(im.convert('RGB'), np.float32) / 255.0
      except Exception as e:  # PIL raises many types
        raise SampleError(texture_path, f'cannot read the texture of {path} ({e})') from e
      has = tt.reshape(-1) >= 0
      vids = triangles.reshape(-1)[has]
      samples = _sample_texture(texture, np.asarray(tex, np.float32)[tt.reshape(-1)[has]])
      total = np.zeros((len(vertices), 3), np.float64)
      np.add.at(total, vids, samples)
      count = np.bincount(vids, minlength=len(vertices))[:, None]
      colors = np.where(count > 0, total / np.maximum(count, 1), 0.5).astype(np.float32)
  return Scan(vertices, triangles, np.clip(colors, 0, 1))


def write_obj(path: str, vertices: np.ndarray, triangles: np.ndarray,
              colors: Optional[np.ndarray] = None, uv: Optional[np.ndarray] = None,
              texture: Optional[np.ndarray] = None) -> None:
  """Writes an `.obj` (1-based faces): vertex colours, or uv + texture (`.mtl` + PNG beside)."""
  stem = os.path.splitext(path)[0]
  with open(path, 'w') as f:
    if texture is not None:
      from PIL import Image
      name = os.path.basename(stem)
      Image.fromarray(np.clip(np.round(texture * 255), 0, 255).astype(np.uint8)).save(
          stem + '.png')
      with open(stem + '.mtl', 'w') as m:
        m.write(f'newmtl material0\nKd 1 1 1\nmap_Kd {name}.png\n')
      f.write(f'mtllib {name}.mtl\nusemtl material0\n')
    for i, v in enumerate(np.asarray(vertices, np.float64)):
      c = '' if colors is None else ' {:.4f} {:.4f} {:.4f}'.format(*colors[i])
      f.write(f'v {v[0]:.5f} {v[1]:.5f} {v[2]:.5f}{c}\n')
    if uv is not None:
      for t in np.asarray(uv, np.float64):
        f.write(f'vt {t[0]:.6f} {t[1]:.6f}\n')
    for t in np.asarray(triangles, np.int64) + 1:
      f.write(f'f {t[0]}/{t[0]} {t[1]}/{t[1]} {t[2]}/{t[2]}\n' if uv is not None
              else f'f {t[0]} {t[1]} {t[2]}\n')


def write_ply(path: str, vertices: np.ndarray, triangles: np.ndarray,
              colors: Optional[np.ndarray] = None) -> None:
  """ASCII PLY with optional uint8 vertex colours (colors in [0, 1])."""
  v = np.asarray(vertices, np.float64)
  t = np.asarray(triangles, np.int64)
  with open(path, 'w') as f:
    f.write(f'ply\nformat ascii 1.0\nelement vertex {len(v)}\n'
            'property float x\nproperty float y\nproperty float z\n')
    if colors is not None:
      f.write('property uchar red\nproperty uchar green\nproperty uchar blue\n')
    f.write(f'element face {len(t)}\nproperty list uchar int vertex_indices\nend_header\n')
    c = None if colors is None else np.clip(np.round(np.asarray(colors) * 255), 0, 255).astype(int)
    for i, p in enumerate(v):
      extra = '' if c is None else f' {c[i, 0]} {c[i, 1]} {c[i, 2]}'
      f.write(f'{p[0]:.5f} {p[1]:.5f} {p[2]:.5f}{extra}\n')
    for tri in t:
      f.write(f'3 {tri[0]} {tri[1]} {tri[2]}\n')
