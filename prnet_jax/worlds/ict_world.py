"""The ICT face world: faces of the ICT-FaceKit model rendered toward photographs, with exact
300W-LP ground truth.

    world = ICTWorld()                 # ICTWorldConfig() ranges
    s = world.sample(seed)             # image, position map, 68 3D landmarks, pose, crop
    batch = world.sample_batch(seeds)  # the same samples, rendered together (faster)

Each sample draws, from its seed alone:

* a person: identity (ICT's N(0, 1) weights), a sparse expression (`ict_face`), skin tone over
  the range of human skin with redder cheeks, nose and lips, mottling, freckles and moles,
  eyebrows as hair strokes, stubble or a beard, a lash line, iris colour and pupil, teeth and
  mouth interior, scalp hair with a ragged hairline (or none), long hair falling behind;
* a camera: a pose over the 300W-LP range, the face 90-200 px across, a perspective camera at a
  random distance (the projected head is what the ground truth describes, so it stays exact);
* a scene: hemispherical ambient light and one to three coloured directional lights with
  highlights, a procedural background (room, natural texture, clutter, plain backdrop;
  defocused), occluders (glasses, hands, hats, microphones, objects) and camera effects
  (colour cast, defocus or motion blur, low resolution, noise, JPEG).

Ground truth follows the project's 300W-LP procedure (`transforms.position_map_from_3dmm` on the
position-map model `ict_face.face_model()`); the whole head is posed, cropped and depth-shifted
with the same transform, so the position map's visible pixels agree with the image's z-buffer.
Every range is a field of `ICTWorldConfig`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from prnet_jax.faces import face_model as fm
from prnet_jax.faces import ict_face, ict_model
from prnet_jax.faces.uv_assets import read_taps
from prnet_jax.geometry import render, transforms
from prnet_jax.geometry.render import vertex_normals
from prnet_jax.worlds import ict_render, image_effects
from prnet_jax.worlds.common import Sample, random_pose_and_crop


@dataclasses.dataclass(frozen=True)
class ICTWorldConfig:
  """The ranges the ICT world draws from (probabilities per sample)."""
  image_size: int = 256
  uv_resolution: int = 256
  layout: str = 'ict'  # the position map's UV layout (`ict_face.LAYOUTS`)
  # Pose and framing (300W-LP: yaw +-90, pitch and roll about +-30 degrees).
  max_angles: tuple = (30.0, 90.0, 30.0)
  face_px: tuple = (90.0, 200.0)
  # Perspective: camera distance in face widths, log-uniform; nearer is stronger perspective.
  camera_distance: tuple = (2.5, 30.0)
  # Person.
  p_bald: float = 0.12
  hairline_cm: tuple = (1.8, 4.5)      # forehead height above the brows
  hair_thickness_cm: tuple = (0.2, 2.0)
  p_long_hair: float = 0.4
  p_beard: float = 0.15
  p_stubble: float = 0.2
  max_freckles: float = 0.12
  # Light.
  max_lights: int = ict_render.MAX_LIGHTS
  ambient: tuple = (0.15, 0.55)
  # Scene.
  backgrounds: tuple = ('indoor', 'indoor', 'fractal', 'fractal', 'clutter', 'plain')
  max_background_blur: float = 3.0
  occluders: tuple = (('glasses', 0.15), ('hand', 0.1), ('hat', 0.08), ('microphone', 0.05),
                      ('object', 0.1))
  # Camera effects (`image_effects.camera`).
  colour_cast: float = 0.08
  gamma: float = 1.3
  p_defocus: float = 0.25
  max_defocus: float = 1.8
  p_motion_blur: float = 0.08
  max_motion: int = 7
  p_low_resolution: float = 0.2
  min_resolution: float = 0.35
  max_noise: float = 0.03
  p_jpeg: float = 0.5
  min_jpeg_quality: int = 25


# What a sample draws, each from its own generator (`sample_batch`'s factor_seeds).
FACTORS = ('identity', 'expression', 'pose', 'appearance', 'lighting', 'scene', 'occlusion',
           'camera')

class _Draw(NamedTuple):
  """What `sample_batch` draws for one sample before rendering the batch."""
  rngs: dict
  seed: int
  identity: np.ndarray
  expression: np.ndarray
  pose: np.ndarray
  gt: transforms.PositionMapSample
  head: np.ndarray
  normals: np.ndarray
  channels: np.ndarray
  params: np.ndarray
  skin: np.ndarray
  background: np.ndarray


SKIN_LIGHT = np.array([0.93, 0.76, 0.66])
SKIN_DARK = np.array([0.24, 0.15, 0.11])
HAIR = np.array([[0.05, 0.04, 0.035], [0.16, 0.1, 0.06], [0.35, 0.22, 0.12], [0.55, 0.4, 0.22],
                 [0.75, 0.6, 0.38], [0.45, 0.2, 0.1], [0.55, 0.55, 0.55], [0.85, 0.85, 0.82]])
HAIR_P = np.array([0.3, 0.25, 0.15, 0.08, 0.07, 0.05, 0.06, 0.04])
IRIS = np.array([[0.2, 0.12, 0.06], [0.1, 0.06, 0.04], [0.3, 0.4, 0.55], [0.3, 0.38, 0.22],
                 [0.38, 0.3, 0.15], [0.45, 0.5, 0.55]])


def _polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
  """(N,) distance of (N, 2) points to the polyline (M, 2)."""
  a, b = line[:-1], line[1:]
  ab = b - a
  t = np.clip(np.einsum('nmk,mk->nm', points[:, None] - a[None], ab) / (ab * ab).sum(-1), 0, 1)
  return np.linalg.norm(points[:, None] - (a + t[..., None] * ab), axis=-1).min(1)


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
  """(N,) bool: (N, 2) points inside the closed polygon (M, 2) (even-odd rule)."""
  x, y = points[:, 0:1], points[:, 1:2]
  a, b = polygon, np.roll(polygon, -1, 0)
  crosses = (a[:, 1] > y) != (b[:, 1] > y)
  xc = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / np.where(b[:, 1] == a[:, 1], 1, b[:, 1] - a[:, 1])
  return (crosses & (x < xc)).sum(1) % 2 == 1


class ICTWorld:
  """Draws ICT faces with exact ground truth (see the module docstring)."""

  def __init__(self, config: ICTWorldConfig = ICTWorldConfig()):
    self.config = config
    self.ict = ict = ict_model.load()
    self.model = ict_face.face_model(config.layout)
    self.keep = ict_face.ict_vertices(config.layout)
    self.image_size, self.uv_resolution = config.image_size, config.uv_resolution
    self.uv_renderer = self.model.uv_renderer(config.uv_resolution)
    # Layouts whose landmarks are read from the map (the 'ict' jaw: `landmark_taps`) store them
    # as read, so the ground truth is what a perfect map gives.
    self._taps = (None if self.model.landmark_taps_uv is None
                  else fm.landmark_taps(self.model, config.uv_resolution))
    self._triangles = jnp.asarray(ict.triangles)
    self._rest = jnp.asarray(ict.neutral, jnp.float32)
    n = len(ict.neutral)
    part = np.empty(n, object)
    for name in ict_model.KEPT_PARTS:
      part[ict.part(name)] = name
    self._part = part
    rest = ict.neutral.astype(np.float64)
    lm = rest[ict.landmarks]
    self._regions = np.full(n, fm.OTHER, np.int8)
    self._regions[self.keep] = self.model.regions
    skin = self._is('face', 'head_and_neck')
    front = skin & (rest[:, 2] > 4.5)
    # Brows, lash line, lips, beard: soft fields on the face from the rest-pose landmarks.
    xy = rest[:, :2]
    brow_d = np.minimum(_polyline_distance(xy, lm[17:22, :2]), _polyline_distance(xy, lm[22:27, :2]))
    self._brow_d = np.where(front, brow_d, 99.0)
    upper = [lm[36:40, :2], lm[42:46, :2]]
    lower = [lm[[39, 40, 41, 36], :2], lm[[45, 46, 47, 42], :2]]
    lash = np.zeros(n)
    for line, w in [(u, 1.0) for u in upper] + [(lo, 0.5) for lo in lower]:
      lash = np.maximum(lash, w * np.clip(1 - _polyline_distance(xy, line) / 0.22, 0, 1))
    self._lash = np.where(front & (rest[:, 2] > 7), lash, 0.0)
    lips = np.r_[lm[48:60, :2], lm[48:49, :2]]
    lip_d = _polyline_distance(xy, lips)
    inside_lips = front & (_inside(xy, lm[48:60, :2]) | (lip_d < 0.12)) & ~_inside(xy, lm[60:68, :2])
    self._lip = np.where(inside_lips, 1.0, np.clip(1 - lip_d / 0.25, 0, 1) * front)
    jaw_y = np.interp(rest[:, 0], lm[0:17, 0], lm[0:17, 1])
    below_nose = rest[:, 1] < lm[33, 1] - 0.3
    beard = (front | (skin & (rest[:, 1] < lm[8, 1] + 2))) & below_nose & (rest[:, 1] > jaw_y - 3.5)
    self._beard = np.where(beard & ~inside_lips, np.clip((lip_d - 0.25) / 0.4, 0, 1), 0.0)
    cheeks = [(lm[2] + lm[31]) / 2, (lm[14] + lm[35]) / 2]
    self._cheek = sum(np.exp(-np.sum((rest - c) ** 2, 1) / 2.5 ** 2) for c in cheeks) * skin
    self._nose = np.exp(-np.sum((rest - lm[30]) ** 2, 1) / 1.5 ** 2) * skin
    # Scalp hair: a height threshold around the head, by azimuth (0 = front, 180 = back).
    self._azimuth = np.rad2deg(np.abs(np.arctan2(rest[:, 0], rest[:, 2] - 1.0)))
    self._y = rest[:, 1]
    self._brow_y = lm[17:27, 1].mean()
    self._scalp = skin
    # Eyes: ICT's eyeball parts are an outer shell (its first 770 vertices: sclera and the
    # transparent cornea) and an inner ball (the last 800: sclera with the iris, drawn in the
    # shader). The shell is left out: opaque, it would hide the iris.
    self._eye = np.zeros(n, bool)
    shell = np.zeros(n, bool)
    eye_geometry = []
    for name in ('eyeball_left', 'eyeball_right'):
      sl = ict.part(name)
      inner = np.arange(sl.start + 770, sl.stop)
      self._eye[inner] = True
      shell[sl.start:sl.start + 770] = True
      centre = rest[sl].mean(0)
      axis = rest[inner].mean(0) - centre
      eye_geometry += [centre, axis / np.linalg.norm(axis)]
    self._eye_geometry = np.concatenate(eye_geometry).astype(np.float32)
    left = np.arange(ict.part('eyeball_left').start + 770, ict.part('eyeball_left').stop)
    self._eye_radius = np.linalg.norm(rest[left] - eye_geometry[0], axis=1).max()
    tris = ict.triangles
    self._render_triangles = jnp.asarray(tris[~shell[tris].all(1)])
    # Ambient occlusion of the neutral head (creases, sockets, under the chin). The mouth's
    # inside, closed in the neutral, keeps some light for when the jaw opens.
    normals = np.asarray(vertex_normals(self._rest, self._triangles))
    ao = ict_render.ambient_occlusion(ict.neutral.astype(np.float32),
                                      np.asarray(self._render_triangles), normals)
    inside = self._is('teeth', 'gums_and_tongue', 'mouth_socket')
    self._occlusion = np.where(inside, np.maximum(ao, 0.35), np.maximum(ao, 0.1))
    self._landmark_centre = lm.mean(0)
    self._face_width = np.ptp(lm[:, 0])
    self._use_native = render.native_available()

  @functools.lru_cache(maxsize=None)
  def _is(self, *parts: str) -> np.ndarray:
    """(V,) bool: the vertices of the named ICT parts (cached; do not modify)."""
    return np.isin(self._part, parts)

  # -------------------------------------------------------------------- per-sample draws

  def _person(self, rng: np.random.Generator, light: np.random.Generator):
    """(channels (V, C) float32, per-sample params (P,), skin colour, hair colour, long hair):
    the person's appearance from `rng`, the lighting from `light`."""
    cfg, n = self.config, len(self._part)
    t = rng.beta(1.2, 1.2)
    skin = ((1 - t) * SKIN_LIGHT + t * SKIN_DARK) * rng.uniform(0.94, 1.06, 3)
    ch = np.zeros((n, len(ict_render.CHANNELS)), np.float32)
    C = ict_render.CH
    albedo = np.tile(skin, (n, 1))
    red = np.array([1.0, 0.78, 0.76])
    albedo *= 1 + (red - 1) * (rng.uniform(0.1, 0.6) * self._cheek
                               + rng.uniform(0.1, 0.5) * self._nose)[:, None]
    lip = rng.uniform(0.55, 1.0) * self._lip
    lip_colour = skin * np.array([1.0, 0.7, 0.72]) * rng.uniform(0.75, 0.95)
    albedo = albedo * (1 - lip[:, None]) + lip_colour * lip[:, None]
    albedo[self._eye] = rng.uniform(0.6, 0.8) * np.array([1.0, 0.95, 0.92])
    albedo[self._is('teeth')] = np.array([0.85, 0.82, 0.72]) * rng.uniform(0.8, 1.05)
    albedo[self._is('gums_and_tongue')] = [0.55, 0.2, 0.2]
    albedo[self._is('mouth_socket')] = [0.2, 0.06, 0.06]
    albedo[self._is('eye_socket_left', 'eye_socket_right')] = skin * 0.5
    ch[:, :3] = np.clip(albedo, 0, 1)
    skin_mask = self._scalp
    ch[:, C['skin']] = skin_mask
    ch[:, C['specular']] = np.where(skin_mask, rng.uniform(0.05, 0.3), 0.2)
    ch[:, C['specular']][self._lip > 0.5] = rng.uniform(0.2, 0.5)
    ch[:, C['shininess']] = np.where(skin_mask, rng.uniform(0.12, 0.35), 0.5)
    ch[:, C['specular']][self._eye] = 0.8
    ch[:, C['shininess']][self._eye] = 2.5
    ch[:, C['eye']] = self._eye
    ch[:, C['occlusion']] = self._occlusion
    hair_colour = HAIR[rng.choice(len(HAIR), p=HAIR_P)] * rng.uniform(0.8, 1.2, 3) ** 0.3
    brow_w = rng.uniform(0.35, 0.75)
    ch[:, C['brow']] = np.clip(1 - self._brow_d / brow_w, 0, 1)
    ch[:, C['lash']] = self._lash * rng.uniform(0.6, 1.0)
    beard = 0.0
    if rng.random() < cfg.p_beard:
      beard = rng.uniform(0.6, 0.95)
    elif rng.random() < cfg.p_stubble:
      beard = rng.uniform(0.2, 0.5)
    ch[:, C['beard']] = self._beard
    # Hairline: threshold height by azimuth; bald heads keep a fringe at the back or nothing.
    front = self._brow_y + rng.uniform(*cfg.hairline_cm)
    temple = front + rng.uniform(-0.5, 1.5)
    above_ear = rng.uniform(6.0, 7.0)
    knots = [0, 45, 68, 76, 84, 100, 115, 180]
    heights = [front, temple, self._brow_y + rng.uniform(2.0, 3.5), rng.uniform(1.5, 4.5),
               above_ear, above_ear, rng.uniform(0.0, 3.0), rng.uniform(-6.0, -2.5)]
    bald = rng.random() < cfg.p_bald
    if bald:
      heights = [h + 30 if a < 95 or rng.random() < 0.5 else h for a, h in zip(knots, heights)]
    threshold = np.interp(self._azimuth, knots, heights)
    ch[:, C['hair']] = np.where(self._scalp, np.clip((self._y - threshold) / 1.2 + 0.5, 0, 1), 0)
    lights = np.zeros((ict_render.MAX_LIGHTS, 6), np.float32)
    key_colour = np.array([1.0, light.uniform(0.85, 1.0), light.uniform(0.7, 1.0)])
    if light.random() < 0.5:
      key_colour = key_colour[::-1]  # cool light as often as warm
    for k in range(light.integers(1, cfg.max_lights + 1)):
      d = np.array([light.uniform(-1, 1), light.uniform(-1, 0.5), light.uniform(0.2, 1.0)])
      power = light.uniform(0.4, 1.0) / (1 + k)
      col = key_colour if k == 0 else 1 - light.uniform(0, 0.15, 3)
      lights[k] = np.concatenate([d / np.linalg.norm(d), col * power])
    amb = light.uniform(*cfg.ambient)
    params = dict(hair_colour=hair_colour, hair_edge=[rng.uniform(0.3, 1.0)],
                  beard_density=[beard], freckles=[rng.uniform(0, cfg.max_freckles) ** 1.5 * 5],
                  moles=[rng.uniform(0, 1)], mottle=[rng.uniform(0.05, 0.2)],
                  sky=amb * light.uniform(0.93, 1.07, 3), ground=amb * light.uniform(0.3, 0.8) * light.uniform(0.9, 1.1, 3),
                  wrap=[light.uniform(0.0, 0.4)], exposure=[light.uniform(0.8, 1.15)],
                  noise_offset=rng.uniform(0, 1000, 3), lights=lights.reshape(-1),
                  eye_geometry=self._eye_geometry,
                  iris_colour=IRIS[rng.integers(len(IRIS))] * rng.uniform(0.8, 1.2),
                  iris_radius=[0.4 * self._eye_radius * rng.uniform(0.95, 1.05)],
                  pupil_radius=[0.4 * self._eye_radius * rng.uniform(0.25, 0.45)])
    vec = np.concatenate([np.asarray(params[name], np.float32).reshape(-1)
                          for name, _ in ict_render.PARAM_SIZES])
    long_hair = (not bald) and rng.random() < cfg.p_long_hair
    # Hair volume: hair-covered vertices pushed out along their normals (image only; the
    # ground truth stays the skin, as 300W-LP's fits do under hair).
    thickness = rng.uniform(*cfg.hair_thickness_cm) * ch[:, C['hair']]
    return ch, vec, skin, hair_colour, long_hair, thickness

  def _perspective(self, vertices: np.ndarray, angles, distance: float) -> np.ndarray:
    """Model-frame vertices whose orthographic view under `angles` is the perspective view of
    `vertices` from `distance` face widths: camera-frame x, y scaled by D / (D - z)."""
    r = transforms.angles_to_matrix(angles)
    cam = (vertices - self._landmark_centre) @ r.T
    d = distance * self._face_width
    cam[:, :2] *= (d / np.maximum(d - cam[:, 2], 1e-3))[:, None]
    return cam @ r + self._landmark_centre

  def _geometry(self, rngs: dict, thickness: np.ndarray):
    """Identity, expression, pose and the posed head, each from its generator in `rngs`:
    (identity, expression, pose, gt, head (V, 3) crop-frame pixels, normals (V, 3)); the head
    drawn with hair `thickness` (V,) cm along its normals."""
    cfg, m = self.config, self.model
    identity = ict_face.sample_identity(rngs['identity'])
    expression = ict_face.sample_expression(rngs['expression'], m.exp_names)
    rng = rngs['pose']
    full = self.ict.vertices(identity, expression).astype(np.float64)
    lo, hi = np.log(cfg.camera_distance)
    distance = np.exp(rng.uniform(lo, hi))
    warped = {}

    model_normals = np.asarray(vertex_normals(jnp.asarray(full, jnp.float32), self._triangles))
    haired = full + thickness[:, None] * model_normals

    def warp(_, angles):
      warped['full'] = self._perspective(haired, angles, distance)
      return self._perspective(full[self.keep], angles, distance)
    pose, gt = random_pose_and_crop(rng, full[self.keep], m.landmarks, self.image_size,
                                    cfg.max_angles, cfg.face_px, warp)
    head = transforms.to_image_frame(transforms.transform_3ddfa(warped['full'], pose[6], pose[:3],
                                                            pose[3:6]), 2 * self.image_size)
    head = transforms.transform_points(gt.transform, head)
    head[:, 2] -= transforms.transform_points(gt.transform, gt.image_vertices)[:, 2].min()
    # Shading normals: the head's, rotated into the crop frame (y flipped like the vertices).
    normals = (model_normals @ transforms.angles_to_matrix(pose[:3]).T
               * np.array([1, -1, 1])).astype(np.float32)
    return identity, expression, pose, gt, head.astype(np.float32), normals

  # -------------------------------------------------------------------- sampling

  def sample(self, seed: int, return_depth: bool = False):
    """The sample of `seed` (deterministic; equal to `sample_batch([seed])`'s); with
    `return_depth`, (sample, (S, S) z-buffer of the rendered head, -inf where none)."""
    out = self.sample_batch([seed], return_depth)
    return (out[0][0], out[1][0]) if return_depth else out[0]

  def sample_batch(self, seeds: Sequence[int], return_depth: bool = False,
                   factor_seeds: Optional[dict] = None):
    """The samples of `seeds`, shaded in one batched call (a list of `Sample`; with
    `return_depth`, also the (B, S, S) z-buffers).

    Each factor (`FACTORS`) draws from its own generator, seeded by the sample's seed, or by
    `factor_seeds[factor][k]` for sample k: varying one factor keeps the rest of the sample."""
    cfg, size = self.config, self.image_size
    draws = []
    for k, seed in enumerate(seeds):
      rngs = {f: np.random.default_rng([(factor_seeds or {}).get(f, seeds)[k], i])
              for i, f in enumerate(FACTORS)}
      channels, params, skin, hair_colour, long_hair, thickness = self._person(
          rngs['appearance'], rngs['lighting'])
      identity, expression, pose, gt, head, normals = self._geometry(rngs, thickness)
      bg = image_effects.background(rngs['scene'], size, cfg.backgrounds,
                                    cfg.max_background_blur)
      if long_hair:
        scalp = channels[:, ict_render.CH['hair']] > 0.5
        down = head[self.ict.landmarks[8], :2] - head[self.ict.landmarks[27], :2]
        down = down / max(np.linalg.norm(down), 1e-6)
        bg = image_effects.long_hair(rngs['appearance'], bg, head[scalp, :2], hair_colour * 0.9,
                                     down)
      draws.append(_Draw(rngs, seed, identity, expression, pose, gt, head, normals, channels,
                         params, skin, bg))
    stack = lambda field: np.stack([getattr(d, field) for d in draws])
    heads = stack('head')
    windows = (None if self._use_native
               else render.plan_windows(heads, np.asarray(self._render_triangles)))
    images, depth = ict_render.render_heads(heads, self._render_triangles, self._rest,
                                            stack('normals'), stack('channels'), stack('params'),
                                            stack('background'), size, self._use_native, windows)
    images = np.asarray(images)
    covered = np.isfinite(np.asarray(depth))
    positions = np.stack([d.gt.positions for d in draws]).astype(np.float32)
    pos_maps = np.asarray(self.uv_renderer(positions), np.float32)
    samples = []
    for k, d in enumerate(draws):
      lm = self.model.landmark_points(positions[k])
      img = image_effects.smooth_silhouette(images[k], covered[k])
      img, _ = image_effects.occlude(d.rngs['occlusion'], img, lm, d.skin, dict(cfg.occluders))
      img = image_effects.camera(d.rngs['camera'], img, cfg)
      if self._taps is not None:
        lm = read_taps(pos_maps[k], *self._taps)
      samples.append(Sample(image=img, position_map=pos_maps[k], landmarks=lm,
                            pose=d.pose.astype(np.float32),
                            crop_transform=d.gt.transform.astype(np.float32),
                            shape_para=d.identity, exp_para=d.expression, seed=d.seed))
    return (samples, np.asarray(depth)) if return_depth else samples


def contact_sheet(samples, columns: int = 8, landmarks: bool = True, tile: Optional[int] = None):
  """A PIL image: the samples' images in a grid (each `tile` px, default full size), the 68
  landmarks drawn in green."""
  from PIL import Image, ImageDraw
  size = samples[0].image.shape[0]
  tile = tile or size
  rows = -(-len(samples) // columns)
  sheet = Image.new('RGB', (columns * tile, rows * tile))
  for i, s in enumerate(samples):
    im = Image.fromarray(s.image)
    if landmarks:
      d = ImageDraw.Draw(im)
      for x, y, _ in s.landmarks:
        d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(0, 255, 0))
    if tile != size:
      im = im.resize((tile, tile), Image.LANCZOS)
    sheet.paste(im, ((i % columns) * tile, (i // columns) * tile))
  return sheet


SHEET_FACTORS = ('identity', 'expression', 'appearance', 'lighting', 'pose', 'occlusion')


def factor_sheet(world: ICTWorld, seed: int = 0, columns: int = 8, tile: int = 128):
  """A PIL image with one row per factor of `SHEET_FACTORS`: sample `seed` with only that
  factor redrawn along the row (occluders drawn with probability 0.5 each in their row)."""
  from PIL import Image, ImageDraw
  rows = []
  for factor in SHEET_FACTORS:
    w = world
    if factor == 'occlusion':
      w = ICTWorld(dataclasses.replace(world.config, occluders=tuple(
          (name, 0.5) for name, _ in world.config.occluders)))
    seeds = [seed] * columns
    samples = w.sample_batch(seeds, factor_seeds={factor: [seed + 1 + j for j in range(columns)]})
    sheet = contact_sheet(samples, columns, landmarks=False, tile=tile)
    ImageDraw.Draw(sheet).text((4, 4), factor, fill=(255, 255, 0))
    rows.append(sheet)
  out = Image.new('RGB', (rows[0].width, sum(r.height for r in rows)))
  for k, r in enumerate(rows):
    out.paste(r, (0, k * r.height))
  return out


def main(argv=None) -> int:
  import argparse
  import os
  import time
  p = argparse.ArgumentParser(description='Draw ICT faces with their ground truth.')
  p.add_argument('--num', type=int, default=16)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--no_landmarks', action='store_true')
  p.add_argument('--factors', action='store_true',
                 help='also write factors.png: one row per factor varied alone')
  p.add_argument('--out', required=True, help='folder for contact_sheet.png and samples.npz')
  a = p.parse_args(argv)
  os.makedirs(a.out, exist_ok=True)
  world = ICTWorld()
  start, samples = time.time(), []
  for k in range(0, a.num, a.batch):
    samples += world.sample_batch(range(a.seed + k, a.seed + min(a.num, k + a.batch)))
    print(f'\r{len(samples)}/{a.num} samples, {len(samples) / (time.time() - start):.1f}/s',
          end='', flush=True)
  print()
  contact_sheet(samples, landmarks=not a.no_landmarks).save(
      os.path.join(a.out, 'contact_sheet.png'))
  np.savez_compressed(os.path.join(a.out, 'samples.npz'),
                      **{f: np.stack([getattr(s, f) for s in samples])
                         for f in ('image', 'position_map', 'landmarks', 'pose')})
  print(f'wrote {a.out}/contact_sheet.png and samples.npz')
  if a.factors:
    factor_sheet(world, a.seed).save(os.path.join(a.out, 'factors.png'))
    print(f'wrote {a.out}/factors.png')
  return 0


if __name__ == '__main__':
  import sys
  sys.exit(main())
