"""The synthetic face world: faces with exact position maps, landmarks and pose, by seed.

Each sample draws an identity, an expression, a pose (yaw -90..90 deg, pitch and roll
-30..30), a scale and placement, skin tone and hair colour, lighting (ambient + directional
Lambertian) and a cluttered background, then follows the 300W-LP procedure
(`geometry.position_map_from_3dmm`: landmark box x 1.5 with the random perturbation) to a
256x256 crop. The image is rendered from the same crop-frame vertices whose values the
position map holds, so image and ground truth agree exactly.

    python -m prnet_jax.synthetic --num=16 --out=DIR

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

from prnet_jax import face_model as fm
from prnet_jax import geometry
from prnet_jax import render

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


@jax.jit
def vertex_normals(vertices: jax.Array, triangles: jax.Array) -> jax.Array:
  """(V, 3) area-weighted unit vertex normals of a mesh."""
  tri = vertices[triangles]
  n = jnp.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  acc = jnp.zeros_like(vertices)
  for k in range(3):
    acc = acc.at[triangles[:, k]].add(n)
  return acc / jnp.maximum(jnp.linalg.norm(acc, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=('size', 'bbox'))
def shade_and_render(positions, normals, albedo, light_dir, ambient, diffuse, background,
                     triangles, size: int, bbox: render.Windows):
  """Lambertian shading per vertex, rasterised over `background` (S, S, 3) in [0, 1]."""
  lambert = jnp.clip(normals @ light_dir, 0.0, 1.0)[:, None]
  colour = jnp.clip(albedo * (ambient + diffuse * lambert), 0.0, 1.0)
  raster = render.rasterize(positions, triangles, size, size, bbox)
  image = render.interpolate(raster, triangles, colour)
  return jnp.where(raster.mask[..., None], image, background)


def random_pose_and_crop(rng: np.random.Generator, vertices: np.ndarray,
                         landmarks: np.ndarray, image_size: int,
                         max_angles=(30.0, 90.0, 30.0), face_px=(90.0, 200.0), warp=None):
  """A pose over the 300W-LP range (pitch, yaw, roll within +-`max_angles` degrees; the face
  `face_px` pixels across its landmarks, anywhere in a canvas of twice `image_size`) and the
  300W-LP ground-truth crop of `vertices` (V, 3) under it: (Pose_Para (7,),
  geometry.PositionMapSample). `warp(vertices, angles)`, if given, deforms the model-frame
  vertices before the procedure (a perspective camera, `ict_world`)."""
  p, y, r = max_angles
  angles = np.deg2rad([rng.uniform(-p, p), rng.uniform(-y, y), rng.uniform(-r, r)])
  if warp is not None:
    vertices = warp(vertices, angles)
  scale = rng.uniform(*face_px) / np.ptp(vertices[landmarks, 0])
  canvas = 2 * image_size
  t = [rng.uniform(0.3, 0.7) * canvas, rng.uniform(0.3, 0.7) * canvas, 0.0]
  pose = np.concatenate([angles, t, [scale]])
  gt = geometry.position_map_from_3dmm(vertices, pose, canvas, landmarks, image_size,
                                       geometry.random_perturbation(rng))
  return pose, gt


def crop_frame_normals(vertices: np.ndarray, angles, triangles: jax.Array) -> np.ndarray:
  """(V, 3) unit normals of the posed mesh in the crop frame (rotated, then y flipped like
  the vertices)."""
  r = geometry.angles_to_matrix(angles)
  return np.asarray(vertex_normals(jnp.asarray(vertices @ r.T, jnp.float32),
                                   triangles)) * np.array([1, -1, 1], np.float32)


def clutter_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """(S, S, 3) float32 in [0, 1]: a gradient, smooth noise and random shapes."""
  ys, xs = np.mgrid[0:size, 0:size] / size
  c0, c1 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
  t = (xs * np.cos(a := rng.uniform(0, 2 * np.pi)) + ys * np.sin(a))[..., None]
  img = c0 * (1 - t) + c1 * t
  low = rng.uniform(-0.15, 0.15, (6, 6, 3))
  img = img + np.kron(low, np.ones((size // 6 + 1, size // 6 + 1, 1)))[:size, :size]
  for _ in range(rng.integers(6, 16)):
    colour = rng.uniform(0, 1, 3)
    cx, cy, rx, ry = rng.uniform(0, 1, 4) * [1, 1, 0.3, 0.3] + [0, 0, 0.03, 0.03]
    if rng.random() < 0.5:
      m = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1
    else:
      m = (np.abs(xs - cx) < rx) & (np.abs(ys - cy) < ry)
    img[m] = 0.3 * img[m] + 0.7 * colour
  img = img + rng.normal(0, 0.02, img.shape)
  return np.clip(img, 0, 1).astype(np.float32)


class SyntheticWorld:
  """Draws synthetic faces from a face model (the embedded procedural model by default)."""

  def __init__(self, model: Optional[fm.FaceModel] = None, image_size: int = 256,
               uv_resolution: int = 256):
    if model is None:
      from prnet_jax.procedural_face import procedural_face_model
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
    background = clutter_background(rng, self.image_size)
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
