"""Shading of ICT heads: procedural skin, hair and brow detail, lights, ambient occlusion.

`render_heads` rasterises a batch of posed heads and shades them. Everything drawn comes from
per-vertex inputs and a vector of per-sample scalars (`PARAMS`: colours, detail strengths,
lights, eye geometry). Per vertex (`_vertex_attributes`): the light (hemispherical ambient scaled
by ambient occlusion, directional lights with wrapped diffuse, i.e. light bleeding through skin,
and Blinn-Phong highlights) and the skin albedo with its low-frequency detail (mottling,
freckles, moles). Per pixel (`_shade_one`): fine detail as value noise of the head's rest-pose
position in centimetres (a solid texture, so it stays on the skin whatever the pose and
expression): brow hairs, stubble and beards, hair strands with a ragged hairline, the iris with
its streaks and pupil, and the lash line. `ambient_occlusion` computes the per-vertex
visibility once per world by z-buffering the mesh from many directions.

Shapes: B samples, V vertices, S x S pixels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax.geometry import render

# Material channels per vertex (the world's `vertex_channels` fills them).
CHANNELS = ('r', 'g', 'b', 'specular', 'shininess', 'hair', 'brow', 'beard', 'skin', 'lash', 'eye',
            'occlusion')
CH = {n: i for i, n in enumerate(CHANNELS)}
MAX_LIGHTS = 3
# Per-sample scalars: name -> size.
PARAM_SIZES = (('hair_colour', 3), ('hair_edge', 1), ('beard_density', 1), ('freckles', 1),
               ('moles', 1), ('mottle', 1), ('sky', 3), ('ground', 3), ('wrap', 1),
               ('exposure', 1), ('noise_offset', 3), ('lights', MAX_LIGHTS * 6),
               ('eye_geometry', 12), ('iris_colour', 3), ('iris_radius', 1), ('pupil_radius', 1))
PARAMS = {}
_o = 0
for _name, _size in PARAM_SIZES:
  PARAMS[_name] = slice(_o, _o + _size)
  _o += _size
NUM_PARAMS = _o


def _hash(ix, iy, iz):
  """Integer lattice -> uniform [0, 1) (a 32-bit integer hash)."""
  h = (ix.astype(jnp.uint32) * jnp.uint32(0x8DA6B343) ^ iy.astype(jnp.uint32) * jnp.uint32(
      0xD8163841) ^ iz.astype(jnp.uint32) * jnp.uint32(0xCB1AB31F))
  h = (h ^ (h >> 13)) * jnp.uint32(0x5BD1E995)
  h = h ^ (h >> 15)
  return (h & jnp.uint32(0xFFFFFF)).astype(jnp.float32) / float(1 << 24)


def value_noise(p: jax.Array) -> jax.Array:
  """(..., 3) points -> (...,) smooth noise in [0, 1] with unit lattice spacing."""
  i = jnp.floor(p)
  f = p - i
  f = f * f * (3 - 2 * f)
  i = i.astype(jnp.int32) + (1 << 20)  # positive lattice indices for the hash
  out = 0.0
  for dx in (0, 1):
    for dy in (0, 1):
      for dz in (0, 1):
        w = ((f[..., 0] if dx else 1 - f[..., 0]) * (f[..., 1] if dy else 1 - f[..., 1])
             * (f[..., 2] if dz else 1 - f[..., 2]))
        out = out + w * _hash(i[..., 0] + dx, i[..., 1] + dy, i[..., 2] + dz)
  return out


def fbm(p: jax.Array, octaves: int = 3) -> jax.Array:
  """Fractal value noise in about [0, 1] (octaves at doubling frequency, halving weight)."""
  total, weight, norm = 0.0, 1.0, 0.0
  for k in range(octaves):
    total = total + weight * value_noise(p * (2.0 ** k) + 17.0 * k)
    norm += weight
    weight *= 0.5
  return total / norm


def ambient_occlusion(vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray,
                      directions: int = 64, size: int = 384, tolerance: float = 1.5
                      ) -> np.ndarray:
  """(V,) ambient visibility in [0, 1] of a mesh's vertices: the cosine-weighted fraction of
  `directions` (a Fibonacci sphere) from which each vertex is seen, by z-buffering the mesh
  from every direction at `size` px (vertices (V, 3), unit normals (V, 3))."""
  k = np.arange(directions) + 0.5
  z = 1 - 2 * k / directions
  phi = np.pi * (1 + 5 ** 0.5) * k
  dirs = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], 1)
  centre = vertices.mean(0)
  scale = (size - 4) / (2 * np.linalg.norm(vertices - centre, axis=1).max())
  views = []
  for d in dirs:  # a rotation taking d to +z
    a = np.cross(d, [0.0, 0.0, 1.0])
    s, c = np.linalg.norm(a), d[2]
    kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    r = np.eye(3) + kx + kx @ kx * ((1 - c) / s ** 2) if s > 1e-8 else np.diag([1, 1, np.sign(c)])
    views.append((vertices - centre) @ r.T * scale + [size / 2, size / 2, 0])
  views = np.asarray(views, np.float32)
  raster = render.rasterize_auto(views, triangles, size, size)
  seen = np.stack([np.asarray(render.vertex_visibility(jnp.asarray(v), jax.tree.map(
      lambda x, i=i: x[i], raster), tolerance)) for i, v in enumerate(views)])  # (D, V)
  weight = np.clip(normals @ dirs.T, 0, None).T  # (D, V)
  return (np.sum(weight * seen, 0) / np.maximum(weight.sum(0), 1e-6)).astype(np.float32)


def _vertex_albedo(rest, channels, params):
  """(V, 3) skin albedo with its low-frequency detail per vertex (as smooth as the mesh
  allows, and cheaper than per pixel): mottling and redness, freckles, moles."""
  p = rest + params[PARAMS['noise_offset']]
  mottle = fbm(p * 0.6, 3) - 0.5
  freck = jnp.clip((value_noise(p * 2.5 + 3.1) - 1 + params[PARAMS['freckles']]) * 8, 0, 1)
  mole = jnp.clip((value_noise(p * 0.9 + 7.7) - 1 + 0.02 * params[PARAMS['moles']]) * 60, 0, 1)
  skin = channels[:, CH['skin']]
  albedo = channels[:, :3] * (1 + (skin * params[PARAMS['mottle']] * mottle)[:, None]
                              * jnp.array([1.0, 1.3, 1.3]))
  spot = jnp.clip(0.35 * freck + 0.7 * mole, 0, 0.8) * skin
  return albedo * (1 - spot[:, None] * jnp.array([0.45, 0.6, 0.7]))


# Channels the pixels read (the rest only feed the per-vertex albedo and lighting).
_PIXEL_CHANNELS = ('hair', 'brow', 'beard', 'lash', 'eye')


def _vertex_lighting(normals, channels, params):
  """(V, 6) light and highlight colour per vertex (Gouraud: the mesh is dense enough at these
  image sizes, and per-pixel lighting doubled the shading time): hemispherical ambient (the
  crop frame's y points down) scaled by ambient occlusion, wrapped diffuse (light through
  skin), Blinn-Phong highlights in Schlick's rational form (no exp/log)."""
  c = lambda name: channels[:, CH[name]][:, None]
  n = normals / jnp.maximum(jnp.linalg.norm(normals, axis=-1, keepdims=True), 1e-6)
  hair = jnp.clip(c('hair') * 2 - 0.5, 0, 1)
  shininess = c('shininess') * 100.0 * (1 - 0.7 * hair)
  up = 0.5 - 0.5 * n[:, 1:2]
  ao = c('occlusion')
  light = ao * (up * params[PARAMS['sky']] + (1 - up) * params[PARAMS['ground']])
  wrap = params[PARAMS['wrap']]
  lights = params[PARAMS['lights']].reshape(MAX_LIGHTS, 6)
  spec = 0.0
  for k in range(MAX_LIGHTS):
    d, col = lights[k, :3], lights[k, 3:]
    ndl = jnp.sum(n * d, -1, keepdims=True)
    light = light + jnp.clip((ndl + wrap) / (1 + wrap), 0, 1) * (0.4 + 0.6 * ao) * col
    h = d + jnp.array([0.0, 0.0, 1.0])
    h = h / jnp.maximum(jnp.linalg.norm(h), 1e-6)
    x = jnp.clip(jnp.sum(n * h, -1, keepdims=True), 0, 1)
    spec = spec + x / jnp.maximum(shininess - shininess * x + x, 1e-6) * (ndl > 0) * col
  return jnp.concatenate([light, spec * c('specular') * (1 - 0.6 * hair)], -1)


def _planar_noise(x, y, z):
  """`value_noise` of points given as three coordinate arrays."""
  return value_noise(jnp.stack([x, y, z], -1))


def _mix(a, b, t):
  """a (3, P) towards b (3, P) or (3, 1) by t (P,)."""
  return a * (1 - t) + b * t


def _vertex_attributes(rest, normals, channels, params):
  """(V, 18) what the pixels interpolate: rest position, light, highlight, albedo, the pixel
  channels and the hairline's raggedness."""
  ragged = fbm((rest + params[PARAMS['noise_offset']]) * 1.2 + 9.0, 2) - 0.5
  return jnp.concatenate([
      rest, _vertex_lighting(normals, channels, params), _vertex_albedo(rest, channels, params),
      channels[:, [CH[n] for n in _PIXEL_CHANNELS]], ragged[:, None]], -1)


def _shade_one(raster: render.Raster, triangles, attrs, params, background):
  """One sample: (S, S, 3) image in [0, 1] from its raster and `_vertex_attributes`.

  Pixels are planar, (channels, S * S): XLA:CPU reads a channel of a pixel-major array with a
  stride, which made this shading 3x slower."""
  size = raster.triangle.shape[0]
  # Interpolated pixel-major (contiguous vertex rows), then one transpose to planes.
  pix = render.interpolate(raster, triangles, attrs).reshape(-1, attrs.shape[-1]).T
  par = lambda name: params[PARAMS[name]][:, None]  # (k, 1) per-sample scalars
  rest = pix[0:3]
  off = params[PARAMS['noise_offset']]
  p = [rest[k] + off[k] for k in range(3)]
  light, spec, albedo = pix[3:6], pix[6:9], pix[9:12]
  c = lambda name: pix[12 + _PIXEL_CHANNELS.index(name)]
  ragged = pix[12 + len(_PIXEL_CHANNELS)]
  hair_colour = par('hair_colour')
  # Eyes (the inner eyeball mesh): sclera, an iris with radial streaks and a dark rim, pupil.
  eyes = params[PARAMS['eye_geometry']].reshape(2, 2, 3)
  left = rest[0] > 0
  rel = [rest[k] - jnp.where(left, eyes[0, 0, k], eyes[1, 0, k]) for k in range(3)]
  axis = [jnp.where(left, eyes[0, 1, k], eyes[1, 1, k]) for k in range(3)]
  along = sum(rel[k] * axis[k] for k in range(3))
  radial = jnp.sqrt(jnp.maximum(sum(rel[k] ** 2 for k in range(3)) - along ** 2, 0))
  ri, rp = params[PARAMS['iris_radius']][0], params[PARAMS['pupil_radius']][0]
  u = radial / ri
  # Radial streaks: noise of the direction around the axis (no per-pixel arctan2).
  inv = 6.0 / jnp.maximum(jnp.sqrt(rel[0] ** 2 + rel[1] ** 2), 1e-6)
  streaks = _planar_noise(rel[0] * inv, rel[1] * inv, u * 3.0)
  iris = par('iris_colour') * (0.6 + 0.8 * streaks) * (1 - 0.6 * jnp.clip((u - 0.8) * 5, 0, 1))
  eye = c('eye') > 0.5
  albedo = jnp.where(eye & (along > 0) & (radial < ri), iris, albedo)
  albedo = jnp.where(eye & (along > 0) & (radial < rp), 0.02, albedo)
  # Stubble / beard: dark hair dots, denser and more solid with the density.
  density = params[PARAMS['beard_density']][0]
  dots = _planar_noise(p[0] * 5.0 + 1.3, p[1] * 5.0 + 1.3, p[2] * 5.0 + 1.3)
  albedo = _mix(albedo, hair_colour, c('beard') * jnp.clip(density * 1.4 * (0.3 + dots), 0, 0.95))
  # Brows: hairs as short strokes (stretched noise), thinning towards the edges of the region.
  strokes = _planar_noise(p[0] * 1.5 + 5.0, p[1] * 9.0 + 5.0, p[2] * 9.0 + 5.0)
  albedo = _mix(albedo, hair_colour * 0.8,
                jnp.clip(c('brow') * 1.6 * (0.4 + strokes) - 0.35, 0, 0.95))
  # Lash line: dark along the lid margins.
  albedo = _mix(albedo, jnp.array([[0.04], [0.03], [0.03]]), jnp.clip(c('lash'), 0, 1) * 0.85)
  # Scalp hair: coverage with a ragged hairline, strands along the head's vertical.
  cover = jnp.clip((c('hair') - 0.5 + par('hair_edge')[0] * ragged) * 6 + 0.5, 0, 1)
  strands = _planar_noise(p[0] * 8.0 + 2.0, p[1] * 0.6 + 2.0, p[2] * 8.0 + 2.0)
  albedo = _mix(albedo, hair_colour * (0.55 + 0.8 * strands), cover)
  colour = jnp.clip((albedo * light + spec) * params[PARAMS['exposure']][0], 0, 1)
  colour = colour.T.reshape(size, size, 3)
  return jnp.where(raster.mask[..., None], colour, background)


def render_heads(vertices, triangles, rest, normals, channels, params, background, size: int,
                 use_native: bool = True, windows: render.Windows | None = None):
  """Rasterise and shade a batch of heads.

  Args:
    vertices: (B, V, 3) crop-frame pixels (x, y, z larger nearer).
    triangles: (T, 3) int32.
    rest: (V, 3) rest-pose positions (cm), the solid-texture coordinate.
    normals: (B, V, 3) crop-frame unit normals.
    channels: (B, V, len(CHANNELS)) material channels.
    params: (B, NUM_PARAMS) per-sample scalars.
    background: (B, S, S, 3) in [0, 1].
    size: S.
    use_native: rasterise with the native kernel (`render.native_available()`); otherwise
      `windows` must be a plan valid for every item (`render.plan_windows` of the batch).

  Returns:
    (images (B, S, S, 3) in [0, 1], depth (B, S, S): z-buffer, -inf where nothing is drawn).
  """
  # Two executables: inside one, XLA fuses the per-vertex work into the per-pixel gathers and
  # recomputes it at every pixel corner (measured 2.5x slower).
  attrs = _vertex_stage(rest, normals, channels, params)
  return _pixel_stage(vertices, triangles, attrs, params, background, size, use_native, windows)


@jax.jit
def _vertex_stage(rest, normals, channels, params):
  return jax.vmap(_vertex_attributes, in_axes=(None, 0, 0, 0))(rest, normals, channels, params)


@functools.partial(jax.jit, static_argnames=('size', 'use_native', 'windows'))
def _pixel_stage(vertices, triangles, attrs, params, background, size, use_native, windows):
  if use_native:
    raster = render.rasterize_auto(vertices, triangles, size, size)
  else:
    raster = jax.vmap(lambda v: render.rasterize(v, triangles, size, size, windows))(vertices)
  # One sample at a time (lax.map): XLA:CPU runs the vmapped shading ~2x slower.
  images = jax.lax.map(lambda a: _shade_one(a[0], triangles, *a[1:]),
                       (raster, attrs, params, background))
  return images, raster.depth
