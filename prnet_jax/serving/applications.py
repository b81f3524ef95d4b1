r"""Texture editing and frontalisation on predicted faces (the official demo's applications).

    p = Predictor.from_pretrained()
    out = swap_texture(p, 'source.jpg', 'target.jpg', part='face')    # (H, W, 3) uint8
    front = frontalize(p.predict(image)[0], image)                   # Frontal: mesh + picture

    python -m prnet_jax.serving.applications swap --source=A.jpg --target=B.jpg --output=OUT [--part=eyes]
    python -m prnet_jax.serving.applications frontalize --input=A.jpg --output=OUT

Both work in UV space, where every face has the same layout:

* a face's texture is the photo sampled at its position map, upsampled bilinearly in UV space to
  `texture_size` px (sharper than the network's R-px map) with a visibility per texel (the
  predictor's z-buffer); texels the source hides (the far cheek of a turned face) are taken
  from the mirrored texel when that one is visible (the UV layouts are left-right symmetric),
  else from the target;
* `swap_texture` puts the source's texture (or its eye region) on the target's mesh, renders it
  with the target's z-buffer and blends it in by Poisson (gradient-domain) cloning
  (`cv2.seamlessClone`, as the official demo): the pasted face takes the target's skin tone and
  light at its border, where a feathered alpha mask would leave a visible step in colour;
* `frontalize` undoes the face's estimated similarity pose (rotation, scale, translation) so
  its own shape and expression stay, and renders the textured mesh from the front. The official
  `frontalize` fits an affine map to the canonical face, which also shears the shape.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np

from prnet_jax.faces.uv_assets import UVAssets
from prnet_jax.geometry import render, transforms

PARTS = ('face', 'eyes')
Part = Union[str, np.ndarray]


class ApplicationError(ValueError):
  """Bad input for an application (no face, face index out of range, bad mask)."""


# ------------------------------------------------------------------------------- UV textures

def _grid(size: int, resolution: int) -> np.ndarray:
  """Texel centres of a size-px texture in the coordinates of an R-px UV map."""
  return (np.arange(size, dtype=np.float32) + 0.5) * resolution / size - 0.5


def _sample_uv(values: np.ndarray, size: int) -> np.ndarray:
  """(R, R, C) UV map -> (size, size, C), bilinear (edges clamped)."""
  r = values.shape[0]
  g = np.clip(_grid(size, r), 0, r - 1)
  ys, xs = np.meshgrid(g, g, indexing='ij')
  return np.asarray(transforms.bilinear_sample(jnp.asarray(values, jnp.float32), jnp.asarray(xs),
                                             jnp.asarray(ys)))


def mirror_symmetric(assets: UVAssets) -> bool:
  """Whether the UV layout is left-right symmetric (column u <-> R - 1 - u): where a face
  pixel's mirror pixel is a face pixel too, the canonical face holds mirror points there (x
  about the face's centre line, the same y and z) within 2% of the face's width, for 95% of
  them. (The layout's geometry, not its landmarks: 68-point definitions such as BFM-68's are
  not exactly symmetric.)"""
  r = assets.resolution
  canonical = np.zeros((r * r, 3), np.float64)
  canonical[assets.face_indices] = assets.canonical_vertices
  canonical = canonical.reshape(r, r, 3)
  face = assets.face_mask > 0
  both = face & face[:, ::-1]
  if both.sum() < 0.5 * face.sum():
    return False
  a, b = canonical[both], canonical[:, ::-1][both]
  centre = np.median(a[:, 0] + b[:, 0]) / 2
  off = np.abs(np.stack([a[:, 0] + b[:, 0] - 2 * centre, a[:, 1] - b[:, 1], a[:, 2] - b[:, 2]],
                        1)).max(1)
  return bool(np.percentile(off, 95) <= 0.02 * np.ptp(assets.canonical_vertices[:, 0]))


def how_well_seen(face, assets: UVAssets, height: int, width: int) -> np.ndarray:
  """(N,) float32 in [0, 1] per vertex: 0 where hidden behind the face itself (a z-buffer of the
  mesh at the photo's size, tolerance 2% of the face's width), else rising with how squarely
  the surface faces the camera (texels seen at a grazing angle are smeared in the photo)."""
  v = np.asarray(face.vertices, np.float32)
  raster = render.rasterize_auto(v, assets.triangles, height, width)
  tol = 0.02 * float(np.ptp(v[:, 0]))
  visible = np.asarray(render.vertex_visibility(jnp.asarray(v), raster, tolerance=tol))
  # The canonical face looks at the camera: it fixes which way the triangles' normals point.
  tri = jnp.asarray(assets.triangles)
  canonical = jnp.asarray(assets.canonical_vertices, jnp.float32)
  sign = np.sign(np.asarray(render.vertex_normals(canonical, tri))[:, 2].mean())
  nz = sign * np.asarray(render.vertex_normals(jnp.asarray(v), tri))[:, 2]
  return (visible * np.clip((nz - 0.1) / 0.4, 0, 1)).astype(np.float32)


def face_texture(face, image: np.ndarray, assets: UVAssets, size: int = 256
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(size, size, 3) float32 texture (0-255) of `face` in `image` and (size, size) float32
  visibility in [0, 1] (`how_well_seen`; 0 off the face)."""
  r = assets.resolution
  pos = _sample_uv(face.position_map[..., :2], size)
  tex = np.asarray(transforms.bilinear_sample(jnp.asarray(image, jnp.float32),
                                            jnp.asarray(pos[..., 0]), jnp.asarray(pos[..., 1])))
  h, w = image.shape[:2]
  vis = np.zeros(r * r, np.float32)
  vis[assets.face_indices] = how_well_seen(face, assets, h, w)
  inside = (pos[..., 0] >= 0) & (pos[..., 0] <= w - 1) & (pos[..., 1] >= 0) & (
      pos[..., 1] <= h - 1)
  vis = _sample_uv((vis.reshape(r, r) * assets.face_mask)[..., None], size)[..., 0] * inside
  return tex.astype(np.float32), vis.astype(np.float32)


def fill_hidden(texture: np.ndarray, visibility: np.ndarray, assets: UVAssets,
                fallback: Optional[np.ndarray] = None, seen: float = 0.5) -> np.ndarray:
  """Texels seen less than `seen` from the mirrored texel where that one is seen better (for
  symmetric layouts), then from `fallback` (e.g. the target's own texture) where given."""
  out = texture.copy()
  hidden = visibility < seen
  if mirror_symmetric(assets):
    mirror = visibility[:, ::-1]
    mirrored_ok = hidden & (mirror > visibility) & (mirror >= 0.5 * seen)
    out[mirrored_ok] = texture[:, ::-1][mirrored_ok]
    hidden &= ~mirrored_ok
  if fallback is not None:
    out[hidden] = fallback[hidden]
  return out


def part_mask(part: Part, assets: UVAssets, size: int = 256) -> np.ndarray:
  """(size, size) float32 UV mask in [0, 1]: 'face' (the face mask), 'eyes' (each eye with its
  brow: the convex hull of their landmarks, grown by a quarter of the eye's width, feathered) or
  an array (R, R) / (size, size) given by the caller (values in [0, 1] or 0-255)."""
  import cv2
  if isinstance(part, str):
    if part == 'face':
      return (_sample_uv(assets.face_mask[..., None], size)[..., 0] > 0.5).astype(np.float32)
    if part == 'eyes':
      k = assets.kpt_uv if assets.kpt_uv_subpixel is None else assets.kpt_uv_subpixel
      k = (k.astype(np.float64) + 0.5) * size / assets.resolution - 0.5
      mask = np.zeros((size, size), np.float32)
      for eye, brow in ((range(36, 42), range(17, 22)), (range(42, 48), range(22, 27))):
        pts = k[list(eye) + list(brow)]
        grow = 0.25 * np.ptp(k[list(eye), 0])
        c = pts.mean(0)
        hull = cv2.convexHull(pts.astype(np.float32))[:, 0]
        d = hull - c  # grown outwards from the centre by `grow` texels
        hull = c + d * (1 + grow / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6))
        cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1.0)
      sigma = max(1.0, size / 128)
      return np.clip(cv2.GaussianBlur(mask, (0, 0), sigma), 0, 1)
    raise ApplicationError(f'part must be one of {PARTS} or a mask array, got {part!r}')
  m = np.asarray(part, np.float32)
  if m.ndim == 3:
    m = m[..., 0]
  if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] not in (assets.resolution, size):
    raise ApplicationError(f'mask must be ({assets.resolution}, {assets.resolution}) or '
                           f'({size}, {size}) in UV space, got {np.shape(part)}')
  if m.max() > 1:
    m = m / 255.0
  if m.shape[0] != size:
    m = _sample_uv(m[..., None], size)[..., 0]
  return np.clip(m, 0, 1) * part_mask('face', assets, size)


# ------------------------------------------------------------------------------- rendering

def vertex_texels(assets: UVAssets, size: int) -> np.ndarray:
  """(N, 2) float32 (x, y) of each face vertex in a size-px texture (inverse of `_grid`)."""
  r = assets.resolution
  rows, cols = np.unravel_index(assets.face_indices, (r, r))
  return (np.stack([cols, rows], -1).astype(np.float32) + 0.5) * size / r - 0.5


def render_texture(vertices: np.ndarray, assets: UVAssets, textures: Sequence[np.ndarray],
                   height: int, width: int) -> tuple[list[np.ndarray], np.ndarray]:
  """Renders the face mesh (vertices (N, 3) in image pixels, z nearer = larger) with each UV
  texture of `textures` ((S, S, C), any C) sampled per pixel through its interpolated UV
  coordinates. Returns ([(H, W, C) float32 images], (H, W) bool coverage)."""
  raster = render.rasterize_auto(np.asarray(vertices, np.float32), assets.triangles, height,
                                 width)
  covered = np.asarray(raster.mask)
  out = []
  for tex in textures:
    s = tex.shape[0]
    # Texel coordinates interpolated per pixel (linear in the map's pixel coordinates).
    t = np.asarray(render.interpolate(raster, jnp.asarray(assets.triangles),
                                      jnp.asarray(vertex_texels(assets, s))))
    img = np.asarray(transforms.bilinear_sample(jnp.asarray(tex, jnp.float32),
                                              jnp.asarray(np.clip(t[..., 0], 0, s - 1)),
                                              jnp.asarray(np.clip(t[..., 1], 0, s - 1))))
    out.append(np.where(covered[..., None], img, 0.0).astype(np.float32))
  return out, covered


def poisson_blend(rendered: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`rendered` (H, W, 3) pasted into `target` (uint8) where `mask` (H, W) bool, by Poisson
  cloning (`cv2.seamlessClone`, NORMAL_CLONE). The mask is kept off the image border, which
  OpenCV's solver needs."""
  import cv2
  m = (mask > 0).astype(np.uint8) * 255
  m[:2], m[-2:], m[:, :2], m[:, -2:] = 0, 0, 0, 0
  m = cv2.erode(m, np.ones((3, 3), np.uint8))
  if m.max() == 0:
    return target.copy()
  ys, xs = np.nonzero(m)
  # seamlessClone centres the mask's bounding box on `center`: the box's own centre keeps it
  # in place (as the official demo computes it).
  center = (int((xs.min() + xs.max()) / 2 + 0.5), int((ys.min() + ys.max()) / 2 + 0.5))
  src = np.clip(np.round(rendered), 0, 255).astype(np.uint8)
  # (OpenCV writes into the mask it is given: pass a copy.)
  out = cv2.seamlessClone(src[..., ::-1].copy(), np.ascontiguousarray(target[..., ::-1]),
                          m.copy(), center, cv2.NORMAL_CLONE)
  # OpenCV's solver also nudges pixels just outside the mask: only the mask may change.
  return np.where(m[..., None] > 0, out[..., ::-1], target).astype(np.uint8)


# ------------------------------------------------------------------------------- swap

def _pick(faces: list, index: int, name: str):
  if not faces:
    raise ApplicationError(f'{name}: no face found')
  if not 0 <= index < len(faces):
    raise ApplicationError(f'{name}: {len(faces)} face(s) found, face index {index} is out of '
                           f'range (0..{len(faces) - 1})')
  return faces[index]


def swap_texture(predictor, source: Any, target: Any, part: Part = 'face',
                 source_face: int = 0, target_face: int = 0, texture_size: int = 256,
                 blend: str = 'poisson') -> np.ndarray:
  """The target photo with the source's face texture (or `part` of it) on its face: (H, W, 3)
  uint8. `source`/`target`: paths or RGB arrays; `*_face`: which detected face (best first);
  `blend`: 'poisson' (seamless cloning) or 'none' (the rendered pixels pasted as they are)."""
  from prnet_jax.data import image_io
  if blend not in ('poisson', 'none'):
    raise ApplicationError(f"blend must be 'poisson' or 'none', got {blend!r}")
  names = [source if isinstance(source, str) else 'source image',
           target if isinstance(target, str) else 'target image']
  try:
    src_img, tgt_img = (image_io.load_photo(x) for x in (source, target))
  except image_io.ImageError as e:
    raise ApplicationError(str(e)) from e
  src = _pick(predictor.predict(src_img), source_face, names[0])
  tgt = _pick(predictor.predict(tgt_img), target_face, names[1])
  return swap_faces(src, src_img, tgt, tgt_img, predictor.assets, part, texture_size, blend)


def swap_faces(src, src_img: np.ndarray, tgt, tgt_img: np.ndarray, assets: UVAssets,
               part: Part = 'face', texture_size: int = 256, blend: str = 'poisson'
               ) -> np.ndarray:
  """`swap_texture` on faces already predicted (`Face` objects and their RGB uint8 images)."""
  s = texture_size
  src_tex, src_vis = face_texture(src, src_img, assets, s)
  tgt_tex, tgt_vis = face_texture(tgt, tgt_img, assets, s)
  tgt_tex = fill_hidden(tgt_tex, tgt_vis, assets)
  src_tex = fill_hidden(src_tex, src_vis, assets, fallback=tgt_tex)
  # Paste only what the source shows (itself or mirrored); the target keeps the rest.
  seen = np.maximum(src_vis, src_vis[:, ::-1]) if mirror_symmetric(assets) else src_vis
  m = (part_mask(part, assets, s) * np.clip(seen / 0.25, 0, 1))[..., None]
  new = tgt_tex * (1 - m) + src_tex * m
  h, w = tgt_img.shape[:2]
  (image, region), covered = render_texture(tgt.vertices, assets, [new, m], h, w)
  region = covered & (region[..., 0] > 0.5)
  # Off the silhouette: its pixels mix in what lies behind the face.
  import cv2
  region = cv2.erode(region.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
  if blend == 'none':
    out = np.where(region[..., None], image, tgt_img.astype(np.float32))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
  return poisson_blend(image, tgt_img, region)


# ------------------------------------------------------------------------------- frontalize

@dataclasses.dataclass
class Frontal:
  """A face turned to the front: its own shape and expression, no pose."""
  vertices: np.ndarray    # (N, 3) in the picture's pixels (x right, y down, z towards viewer)
  canonical: np.ndarray   # (N, 3) the same in the canonical frame of the UV assets (y up)
  triangles: np.ndarray   # (T, 3)
  colors: np.ndarray      # (N, 3) in [0, 1]
  image: np.ndarray       # (size, size, 3) uint8, the textured mesh on `background`
  mask: np.ndarray        # (size, size) bool, where the face is


def frontalize(face, image: np.ndarray, assets: UVAssets, size: int = 256,
               texture_size: int = 256, background=(255, 255, 255)) -> Frontal:
  """`face` (an `inference.Face` of `image`) without its pose: vertices mapped back through the
  inverse of its similarity pose (`Face.camera_matrix`), and rendered from the front into a
  size x size picture (the face 80% of the width), hidden texels filled from their mirror."""
  cam = np.asarray(face.camera_matrix, np.float64)
  sr, t = cam[:, :3], cam[:, 3]
  scale = np.cbrt(abs(np.linalg.det(sr)))
  rot = sr / scale
  up = np.asarray(face.vertices, np.float64) * np.array([1, -1, 1])
  canonical = (up - t) @ rot / scale  # the inverse of up = s R c + t, row vectors
  c = canonical[:, :2].min(0) + np.ptp(canonical[:, :2], 0) / 2
  k = 0.8 * size / max(np.ptp(canonical[:, 0]), np.ptp(canonical[:, 1]), 1e-6)
  verts = np.stack([(canonical[:, 0] - c[0]) * k + (size - 1) / 2,
                    -(canonical[:, 1] - c[1]) * k + (size - 1) / 2,
                    (canonical[:, 2] - canonical[:, 2].min()) * k], -1).astype(np.float32)
  tex, vis = face_texture(face, image, assets, texture_size)
  tex = fill_hidden(tex, vis, assets)
  (picture,), covered = render_texture(verts, assets, [tex], size, size)
  bg = np.asarray(background, np.float32)
  picture = np.where(covered[..., None], picture, bg)
  colors = _vertex_colors(tex, assets)
  return Frontal(verts, canonical.astype(np.float32), assets.triangles, colors,
                 np.clip(np.round(picture), 0, 255).astype(np.uint8), covered)


def _vertex_colors(texture: np.ndarray, assets: UVAssets) -> np.ndarray:
  t = vertex_texels(assets, texture.shape[0])
  c = np.asarray(transforms.bilinear_sample(jnp.asarray(texture), jnp.asarray(t[:, 0]),
                                          jnp.asarray(t[:, 1])))
  return np.clip(c / 255.0, 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------- CLI

def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse

  from PIL import Image

  from prnet_jax.data import image_io, mesh_io
  from prnet_jax.nn import checkpoints
  from prnet_jax.serving import detectors, inference
  p = argparse.ArgumentParser(description='Face texture swap and frontalisation.')
  p.add_argument('--checkpoint', default=checkpoints.PRETRAINED,
                 help="checkpoint directory, a run's workdir, or 'pretrained' (the default)")
  p.add_argument('--uv_assets', default=None, help="'ict', 'procedural' or a uv-data folder")
  p.add_argument('--detector', default='auto', choices=detectors.NAMES)
  sub = p.add_subparsers(dest='command', required=True)
  sw = sub.add_parser('swap', help="put the source's face texture on the target's face")
  sw.add_argument('--source', required=True)
  sw.add_argument('--target', required=True)
  sw.add_argument('--part', default='face',
                  help="'face', 'eyes', or a UV-space mask image (white = take the source)")
  sw.add_argument('--source_face', type=int, default=0, help='which face of the source')
  sw.add_argument('--target_face', type=int, default=0, help='which face of the target')
  sw.add_argument('--blend', default='poisson', choices=('poisson', 'none'))
  sw.add_argument('--output', required=True, help='output folder')
  fr = sub.add_parser('frontalize', help='the face turned to the front (picture and mesh)')
  fr.add_argument('--input', required=True)
  fr.add_argument('--face', type=int, default=0, help='which face')
  fr.add_argument('--size', type=int, default=256, help='side of the frontal picture')
  fr.add_argument('--output', required=True, help='output folder')
  a = p.parse_args(argv)
  from prnet_jax.serving.predict import output_folder_problem
  problem = output_folder_problem(a.output)
  if problem:
    print(f'error: {problem}')
    return 2
  try:
    predictor = inference.Predictor.from_checkpoint(a.checkpoint, a.uv_assets, a.detector)
    if a.command == 'swap':
      part = a.part
      if part not in PARTS:
        if not os.path.isfile(part):
          raise ApplicationError(f"{part}: --part must be 'face', 'eyes' or a mask image file")
        mask = image_io.load_photo(part)  # its checks (size, format) and one-line errors
        part = np.asarray(Image.fromarray(mask).convert('L'), np.float32)
      out = swap_texture(predictor, a.source, a.target, part, a.source_face, a.target_face,
                         blend=a.blend)
      stem = (os.path.splitext(os.path.basename(a.source))[0] + '_on_'
              + os.path.splitext(os.path.basename(a.target))[0])
      path = os.path.join(a.output, stem + '.png')
      Image.fromarray(out).save(path)
      print(f'wrote {path}')
    else:
      image = image_io.load_photo(a.input)
      face = _pick(predictor.predict(image), a.face, a.input)
      front = frontalize(face, image, predictor.assets, a.size)
      stem = os.path.join(a.output, os.path.splitext(os.path.basename(a.input))[0])
      Image.fromarray(front.image).save(stem + '_frontal.png')
      mesh_io.write_obj(stem + '_frontal.obj', front.vertices,
                        front.triangles, colors=front.colors)
      print(f'wrote {stem}_frontal.png, {stem}_frontal.obj')
  except (ApplicationError, inference.PredictError, image_io.ImageError) as e:
    print(f'error: {e}')
    return 2
  except OSError as e:  # writing the result
    print(f'error: cannot write {e.filename or a.output}: {e.strerror or e}')
    return 1
  return 0


if __name__ == '__main__':
  import sys
  sys.exit(main())
