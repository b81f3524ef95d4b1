"""The synthetic face world: faces with exact position maps, landmarks and pose, by seed.

Each sample draws an identity, an expression, a pose (yaw -90..90 deg, pitch and roll
-30..30), a scale and placement, skin tone and hair colour, lighting (ambient + directional
Lambertian) and a cluttered background, then follows the 300W-LP procedure
(`transforms.position_map_from_3dmm`: landmark box x 1.5 with the random perturbation) to a
256x256 crop. The image is rendered from the same crop-frame vertices whose values the
position map holds, so image and ground truth agree exactly.

    python -m prnet_jax.worlds.procedural_world --num=16 --out=DIR

writes `DIR/images/*.png`, `DIR/contact_sheet.png` (landmarks drawn) and `DIR/samples.npz`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax.faces import face_model as fm
from prnet_jax.geometry import render
from prnet_jax.worlds.common import Sample, crop_frame_normals, random_pose_and_crop
from prnet_jax.worlds.image_effects import shape_clutter


@functools.partial(jax.jit, static_argnames=('size', 'bbox'))
def shade_and_render(positions, normals, albedo, light_dir, ambient, diffuse, background,
                     triangles, size: int, bbox: render.Windows):
  """Lambertian shading per vertex, rasterised over `background` (S, S, 3) in [0, 1]."""
  lambert = jnp.clip(normals @ light_dir, 0.0, 1.0)[:, None]
  colour = jnp.clip(albedo * (ambient + diffuse * lambert), 0.0, 1.0)
  raster = render.rasterize(positions, triangles, size, size, bbox)
  image = render.interpolate(raster, triangles, colour)
  return jnp.where(raster.mask[..., None], image, background)


class SyntheticWorld:
  """Draws synthetic faces from a face model (the embedded procedural model by default)."""

  def __init__(self, model: Optional[fm.FaceModel] = None, image_size: int = 256,
               uv_resolution: int = 256):
    if model is None:
      from prnet_jax.faces.procedural_face import procedural_face_model
      model = procedural_face_model()
    if model.albedo is None:
      raise ValueError('the synthetic world needs a face model with an albedo')
    self.model = model
    self.image_size = image_size
    self.uv_resolution = uv_resolution
    self.uv_renderer = model.uv_renderer(uv_resolution)
    self._triangles = jnp.asarray(model.triangles)
    self._exp_index = {n: i for i, n in enumerate(model.exp_names)}

  def _expression(self, rng: np.random.Generator) -> np.ndarray:
    exp = np.zeros(len(self.model.exp_names))
    named = {'jaw_open': rng.uniform(0, 1) ** 2, 'smile': rng.uniform(-0.3, 1.0),
             'brow_raise': rng.uniform(-0.5, 1.0), 'mouth_wide': rng.uniform(-0.5, 0.8)}
    r = rng.random()
    named['eye_close' if r < 0.15 else 'right_eye_close' if r < 0.2 else 'left_eye_close'
          if r < 0.25 else 'eye_close'] = rng.uniform(0.7, 1.0) if r < 0.25 else rng.uniform(0, 0.3)
    for name, value in named.items():
      if name in self._exp_index:
        exp[self._exp_index[name]] = value
    if not self._exp_index:  # a model without names (BFM): small random expressions
      exp = rng.normal(0, 0.5, exp.shape) * self.model.exp_ev
    return exp

  def sample(self, seed: int) -> Sample:
    """The sample of `seed` (deterministic)."""
    rng = np.random.default_rng(seed)
    m = self.model
    shape = rng.normal(0, 0.8, m.shape_ev.shape) * m.shape_ev
    exp = self._expression(rng)
    vertices = m.vertices(shape, exp)
    pose, gt = random_pose_and_crop(rng, vertices, m.landmarks, self.image_size)
    positions = gt.positions.astype(np.float32)
    normals = crop_frame_normals(vertices, pose[:3], self._triangles)
    tone = rng.uniform(0.55, 1.15) * np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.88, 1.0)])
    hair = rng.uniform(0.3, 2.5)
    albedo = m.albedo * tone
    dark = m.albedo.mean(1) < 0.2  # hair, brows, pupils: recolour hair, keep pupils
    albedo[dark] = np.clip(m.albedo[dark] * hair, 0, 1)
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.3), 1.0])
    light /= np.linalg.norm(light)
    background = shape_clutter(rng, self.image_size)
    windows = render.plan_windows(positions, m.triangles)
    image = shade_and_render(positions, normals, albedo.astype(np.float32),
                             light.astype(np.float32), rng.uniform(0.25, 0.45),
                             rng.uniform(0.6, 0.9), background, self._triangles,
                             self.image_size, windows)
    pos_map = np.asarray(self.uv_renderer(positions))
    return Sample(image=np.round(np.asarray(image) * 255).astype(np.uint8),
                  position_map=pos_map.astype(np.float32),
                  landmarks=positions[m.landmarks].astype(np.float32),
                  pose=pose.astype(np.float32),
                  crop_transform=gt.transform.astype(np.float32), shape_para=shape.astype(np.float32),
                  exp_para=exp.astype(np.float32), seed=seed)


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, radius: int = 2):
  """A PIL image of `image` with the 68 landmarks drawn (coloured by group)."""
  from PIL import Image, ImageDraw
  im = Image.fromarray(image)
  d = ImageDraw.Draw(im)
  colours = [(0, 255, 0)] * 17 + [(255, 200, 0)] * 10 + [(0, 200, 255)] * 9 + \
            [(255, 0, 255)] * 12 + [(255, 60, 60)] * 20
  for (x, y), c in zip(np.asarray(landmarks)[:, :2], colours):
    d.ellipse([x - radius, y - radius, x + radius, y + radius], fill=c)
  return im


def contact_sheet(samples: Sequence[Sample], columns: int = 4):
  """A grid of the samples' images with landmarks drawn and |yaw| written."""
  from PIL import Image, ImageDraw
  s = samples[0].image.shape[0]
  rows = -(-len(samples) // columns)
  sheet = Image.new('RGB', (columns * s, rows * s), (255, 255, 255))
  for i, smp in enumerate(samples):
    tile = draw_landmarks(smp.image, smp.landmarks)
    ImageDraw.Draw(tile).text((4, 4), f'yaw {np.rad2deg(smp.pose[1]):+.0f}', fill=(255, 255, 0))
    sheet.paste(tile, ((i % columns) * s, (i // columns) * s))
  return sheet


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description='Write synthetic faces, a contact sheet and arrays.')
  p.add_argument('--num', type=int, default=16)
  p.add_argument('--out', required=True)
  p.add_argument('--seed', type=int, default=0, help='first sample seed')
  a = p.parse_args(argv)
  from PIL import Image
  world = SyntheticWorld()
  os.makedirs(os.path.join(a.out, 'images'), exist_ok=True)
  samples = []
  for i in range(a.num):
    smp = world.sample(a.seed + i)
    Image.fromarray(smp.image).save(os.path.join(a.out, 'images', f'{smp.seed:06d}.png'))
    samples.append(smp)
    print(f'\rsample {i + 1}/{a.num}', end='', file=sys.stderr, flush=True)
  print(file=sys.stderr)
  contact_sheet(samples).save(os.path.join(a.out, 'contact_sheet.png'))
  np.savez_compressed(os.path.join(a.out, 'samples.npz'), **{
      f.name: np.stack([getattr(s, f.name) for s in samples])
      for f in dataclasses.fields(Sample)})
  print(f'wrote {a.num} samples to {a.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
