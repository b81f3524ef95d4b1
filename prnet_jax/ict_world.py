"""Faces of the ICT-FaceKit model rendered with exact 300W-LP-style ground truth (a first world).

    world = ICTWorld(image_size=256)
    s = world.sample(seed)       # image, position map, 68 3D landmarks, pose, crop transform

Each sample: an identity (ICT's N(0, 1) weights) and a sparse expression (`ict_face`), a pose
over the 300W-LP range (yaw +-90, pitch and roll +-30 degrees), the whole head rendered
(face, eyes, teeth and mouth interior when the jaw opens) with a per-vertex skin albedo (tone,
redder lips, cheeks and nose, darker brows), white sclera and a coloured iris, ambient light and
two or three directional lights with a specular highlight, over a cluttered background. The ground truth
follows the project's 300W-LP procedure exactly (`geometry.position_map_from_3dmm` on the
position-map model `ict_face.face_model()`, its crop applied to the rendered head too).

Not yet here: textures in UV, hair, occluders, a perspective camera, camera effects.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax import face_model as fm
from prnet_jax import geometry, ict_face, ict_model, render
from prnet_jax.synthetic import (Sample, clutter_background, crop_frame_normals,
                                 random_pose_and_crop)


@functools.partial(jax.jit, static_argnames=('size', 'bbox'))
def shade_and_render(positions, normals, albedo, specular, lights, ambient, background,
                     triangles, size: int, bbox: render.Windows):
  """Per-vertex Blinn-Phong shading (lights (L, 4): direction xyz, intensity), rasterised
  over `background` (S, S, 3) in [0, 1]. Returns (image, raster)."""
  dirs, power = lights[:, :3], lights[:, 3]
  ndotl = jnp.clip(normals @ dirs.T, 0.0, 1.0)                       # (V, L)
  half = dirs + jnp.array([0.0, 0.0, 1.0])
  half = half / jnp.linalg.norm(half, axis=-1, keepdims=True)
  spec = jnp.clip(normals @ half.T, 0.0, 1.0) ** 24 * (ndotl > 0)
  colour = albedo * (ambient + ndotl @ power[:, None]) + specular[:, None] * (spec @ power)[:, None]
  raster = render.rasterize(positions, triangles, size, size, bbox)
  image = render.interpolate(raster, triangles, jnp.clip(colour, 0.0, 1.0))
  return jnp.where(raster.mask[..., None], image, background), raster


MAX_LIGHTS = 3


class ICTWorld:
  """Draws ICT faces with exact ground truth (see the module docstring)."""

  def __init__(self, image_size: int = 256, uv_resolution: int = 256):
    self.ict = ict_model.load()
    self.model = ict_face.face_model()
    self.keep = ict_face.ict_vertices()
    self.image_size, self.uv_resolution = image_size, uv_resolution
    self.uv_renderer = self.model.uv_renderer(uv_resolution)
    self._triangles = jnp.asarray(self.ict.triangles)
    ict = self.ict
    n = len(ict.neutral)
    self._part = np.empty(n, object)
    for name in ict_model.KEPT_PARTS:
      self._part[ict.part(name)] = name
    # Skin regions of the whole head from the position-map model's regions (others: skin).
    regions = np.full(n, fm.OTHER, np.int8)
    regions[self.keep] = self.model.regions
    self._regions = regions
    face_lm = ict.neutral[ict.landmarks]
    # Iris: eyeball vertices in front of the eyeball's centre, near its axis.
    self._iris = np.zeros(n, bool)
    for name in ('eyeball_left', 'eyeball_right'):
      sl = ict.part(name)
      v = ict.neutral[sl]
      c = v.mean(0)
      radial = np.linalg.norm(v[:, :2] - c[:2], axis=1)
      self._iris[sl] = (v[:, 2] > c[2]) & (radial < 0.55 * np.ptp(v[:, 0]) / 2)
    # Brows: face vertices above the eyes near the brow landmarks.
    brow = face_lm[17:27]
    d = np.linalg.norm(ict.neutral[:, None, :2] - brow[None, :, :2], axis=-1).min(1)
    self._brow = self._is('face') & (d < 0.6) & (ict.neutral[:, 2] > 5)

  def _is(self, *parts: str) -> np.ndarray:
    """(V,) bool: the vertices of the named ICT parts."""
    return np.isin(self._part, parts)

  def _albedo(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) albedo and (V,) specular strength for a random person."""
    n = len(self.ict.neutral)
    # Skin tone from very light to very dark (a melanin-like scale), slightly varied hue.
    t = rng.uniform(0, 1)
    light, dark = np.array([0.92, 0.74, 0.64]), np.array([0.28, 0.17, 0.12])
    skin = (1 - t) * light + t * dark
    skin = skin * rng.uniform(0.95, 1.05, 3)
    albedo = np.tile(skin, (n, 1))
    red = np.array([1.08, 0.88, 0.88])
    albedo[self._regions == fm.MOUTH] *= red * rng.uniform(0.85, 1.0)
    albedo[self._regions == fm.NOSE] *= 1 + (red - 1) * rng.uniform(0, 0.5)
    albedo[self._brow] *= rng.uniform(0.25, 0.6)
    albedo *= 1 + rng.normal(0, 0.03, (n, 1))  # fine mottling
    eye = self._is('eyeball_left', 'eyeball_right')
    albedo[eye] = rng.uniform(0.85, 0.95) * np.array([1.0, 0.97, 0.95])
    iris = rng.choice([[0.25, 0.15, 0.08], [0.35, 0.45, 0.6], [0.3, 0.4, 0.25],
                       [0.12, 0.08, 0.05]]) * rng.uniform(0.8, 1.2)
    albedo[self._iris] = iris
    albedo[self._is('teeth')] = [0.9, 0.87, 0.78]
    albedo[self._is('gums_and_tongue', 'mouth_socket')] = [0.45, 0.12, 0.12]
    albedo[self._is('eye_socket_left', 'eye_socket_right')] = skin * 0.6
    specular = np.full(n, rng.uniform(0.05, 0.25), np.float32)
    specular[eye] = 0.6
    return np.clip(albedo, 0, 1).astype(np.float32), specular

  def sample(self, seed: int, return_depth: bool = False):
    """The sample of `seed` (deterministic); with `return_depth`, (sample, (S, S) z-buffer
    depth of the rendered head in the crop frame, -inf where nothing is drawn)."""
    rng = np.random.default_rng(seed)
    m, ict = self.model, self.ict
    identity = ict_face.sample_identity(rng)
    expression = ict_face.sample_expression(rng, m.exp_names)
    full = ict.vertices(identity, expression).astype(np.float64)
    vertices = full[self.keep]
    pose, gt = random_pose_and_crop(rng, vertices, m.landmarks, self.image_size)
    positions = gt.positions.astype(np.float32)
    # The whole head through the same pose, crop and depth shift.
    head = geometry.to_image_frame(geometry.transform_3ddfa(full, pose[6], pose[:3], pose[3:6]),
                                   2 * self.image_size)
    head = geometry.transform_points(gt.transform, head)
    head[:, 2] -= geometry.transform_points(gt.transform, gt.image_vertices)[:, 2].min()
    normals = crop_frame_normals(full, pose[:3], self._triangles)
    albedo, specular = self._albedo(rng)
    # Always three lights (unused ones dark), so the shading compiles once.
    lights = np.zeros((MAX_LIGHTS, 4), np.float32)
    lights[:, 2] = 1.0
    for k in range(rng.integers(1, MAX_LIGHTS) + 1):
      d = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.4), rng.uniform(0.3, 1.0)])
      lights[k] = np.concatenate([d / np.linalg.norm(d), [rng.uniform(0.3, 0.8) / (k + 1)]])
    background = clutter_background(rng, self.image_size)
    windows = render.plan_windows(head, ict.triangles)
    image, raster = shade_and_render(head.astype(np.float32), normals, albedo, specular,
                                lights, rng.uniform(0.2, 0.45),
                                background, self._triangles, self.image_size, windows)
    sample = Sample(image=np.round(np.asarray(image) * 255).astype(np.uint8),
                    position_map=np.asarray(self.uv_renderer(positions), np.float32),
                    landmarks=positions[m.landmarks].astype(np.float32),
                    pose=pose.astype(np.float32), crop_transform=gt.transform.astype(np.float32),
                    shape_para=identity, exp_para=expression, seed=seed)
    return (sample, np.asarray(raster.depth)) if return_depth else sample


def contact_sheet(samples, columns: int = 8, landmarks: bool = True):
  """A PIL image: the samples' images in a grid, 68 landmarks drawn in green."""
  from PIL import Image, ImageDraw
  size = samples[0].image.shape[0]
  rows = -(-len(samples) // columns)
  sheet = Image.new('RGB', (columns * size, rows * size))
  for i, s in enumerate(samples):
    tile = Image.fromarray(s.image)
    if landmarks:
      d = ImageDraw.Draw(tile)
      for x, y, _ in s.landmarks:
        d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(0, 255, 0))
    sheet.paste(tile, ((i % columns) * size, (i // columns) * size))
  return sheet


def main(argv=None) -> int:
  import argparse
  import os
  import time
  p = argparse.ArgumentParser(description='Draw ICT faces with their ground truth.')
  p.add_argument('--num', type=int, default=16)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', required=True, help='folder for contact_sheet.png and samples.npz')
  a = p.parse_args(argv)
  os.makedirs(a.out, exist_ok=True)
  world = ICTWorld()
  start, samples = time.time(), []
  for k in range(a.num):
    samples.append(world.sample(a.seed + k))
    print(f'\r{k + 1}/{a.num} samples, {(k + 1) / (time.time() - start):.1f}/s', end='',
          flush=True)
  print()
  contact_sheet(samples).save(os.path.join(a.out, 'contact_sheet.png'))
  np.savez_compressed(os.path.join(a.out, 'samples.npz'),
                      **{f: np.stack([getattr(s, f) for s in samples])
                         for f in ('image', 'position_map', 'landmarks', 'pose')})
  print(f'wrote {a.out}/contact_sheet.png and samples.npz')
  return 0


if __name__ == '__main__':
  import sys
  sys.exit(main())
