"""The embedded procedural face model: a face-shaped 3DMM built deterministically by code.

No data files: the head is a surface over a (u, v) grid. u sweeps an angle theta around the
vertical axis (+-100 deg: face, cheeks, ears), v sweeps height (neck to crown); the base is an
elliptic cylinder whose width, depth and centre vary with height (neck, chin, jaw, cheekbones,
forehead, crown). Smooth analytic fields add the features (eye sockets and eyeballs, brow
ridge, nose with alae, cheeks, lips with a mouth line, chin, ears). Units are millimetres,
model space y up, z towards the viewer. UV = the grid coordinates, so the face sits in the
centre of the UV map, left/right symmetric, forehead at the top (v up), like PRNet's layout.

Identity and expression bases are displacement fields of the same kind (jaw open opens the
mouth slit between the lips; eye closure squeezes the eye opening shut). Landmarks follow the
iBUG-68 semantics at their anatomical positions on the surface; regions come from the same
landmark rule as for BFM (`face_model.regions_from_landmarks`).
"""

from __future__ import annotations

import functools

import numpy as np

from prnet_jax.faces import face_model as fm

NU, NV = 161, 181                    # grid resolution (29,141 vertices, 57,600 triangles)
THETA_MAX = np.deg2rad(100.0)
Y_MIN, Y_MAX = -140.0, 115.0
EYE_X, EYE_Y, EYE_RX, EYE_RY = 32.5, 20.5, 13.5, 5.4   # eye opening ellipses at (+-EYE_X, EYE_Y)
MOUTH_Y, MOUTH_HALF_WIDTH = -40.0, 23.0

# Base cross-section along the height: half-width a, half-depth b, depth centre zc.
_Y = [-140, -105, -92, -84, -70, -50, -30, -10, 15, 40, 70, 95, 115]
_A = [48, 48, 42, 32, 46, 56, 63, 68, 70, 69, 65, 54, 34]
_B = [48, 48, 52, 58, 74, 82, 86, 88, 86, 86, 82, 70, 45]
_ZC = [-12, -12, -4, 14, 10, 6, 4, 2, 0, -2, -4, -8, -10]

_Y_KNOTS = [Y_MIN, -95.0, 85.0, Y_MAX]   # height -> v: neck and crown get the map's borders
_V_KNOTS = [0.0, 0.1, 0.96, 1.0]

EXPRESSIONS = ('jaw_open', 'smile', 'brow_raise', 'eye_close', 'right_eye_close',
               'left_eye_close', 'mouth_wide')


def _g(x, s):
  return np.exp(-0.5 * (np.asarray(x) / s) ** 2)


def _smoothstep(x, lo, hi):
  t = np.clip((np.asarray(x) - lo) / (hi - lo), 0.0, 1.0)
  return t * t * (3 - 2 * t)


def _landmark_xy() -> np.ndarray:
  """(68, 2) frontal (x, y) of the iBUG-68 landmarks in mm (x: image right = subject's left)."""
  phi = np.linspace(-np.pi / 2, np.pi / 2, 17)
  jaw = np.stack([66 * np.sin(phi), 18 - 103 * np.cos(phi)], 1)
  bx = np.linspace(-55, -13, 5)
  brow_r = np.stack([bx, 33 + 6 * (1 - ((np.abs(bx) - 33) / 24) ** 2)], 1)
  brow_l = brow_r[::-1] * [-1, 1]
  nose = [[0, 27], [0, 15], [0, 3], [0, -8], [-14, -17], [-7, -19], [0, -20], [7, -19],
          [14, -17]]
  ex, ey, rx = EYE_X, EYE_Y, EYE_RX
  eye_r = [[-ex - rx, ey], [-ex - 0.35 * rx, ey + 4.2], [-ex + 0.35 * rx, ey + 4.2],
           [-ex + rx, ey], [-ex + 0.35 * rx, ey - 3.6], [-ex - 0.35 * rx, ey - 3.6]]
  eye_l = [[-x, y] for x, y in [eye_r[3], eye_r[2], eye_r[1], eye_r[0], eye_r[5], eye_r[4]]]
  m = MOUTH_Y
  mouth = [[-25, m], [-16, m + 6], [-7, m + 9], [0, m + 8], [7, m + 9], [16, m + 6], [25, m],
           [16, m - 7], [7, m - 10], [0, m - 11], [-7, m - 10], [-16, m - 7],
           [-21, m], [-8, m + 1.5], [0, m + 1.2], [8, m + 1.5], [21, m], [8, m - 1.5],
           [0, m - 1.2], [-8, m - 1.5]]
  pts = np.concatenate([jaw, brow_r, brow_l, nose, eye_r, eye_l, mouth]).astype(np.float64)
  assert pts.shape == (68, 2)
  return pts


def _eye_weight(xf, y, side, grow=1.0, fade=(0.8, 1.6)):
  """1 inside the eye opening (of `side` = -1 right eye / +1 left eye), fading outside."""
  r2 = ((xf - side * EYE_X) / (EYE_RX * grow)) ** 2 + ((y - EYE_Y) / (EYE_RY * grow)) ** 2
  return 1.0 - _smoothstep(r2, *fade)


def _features(xf, y, front):
  """Named displacement fields (mm along the surface normal) of the mean face."""
  ax = np.abs(xf)
  f = {}
  f['sockets'] = -11.0 * _g(ax - EYE_X, 15) * _g(y - EYE_Y - 1, 10)
  eyeball = sum(np.sqrt(np.clip(1 - ((xf - s * EYE_X) / 13) ** 2 - ((y - EYE_Y) / 7) ** 2, 0, 1))
                for s in (-1, 1))
  f['eyeballs'] = 6.0 * eyeball
  f['brows'] = 5.0 * _g(y - 33, 6) * (1 - _smoothstep(ax, 45, 62))
  h = np.interp(y, [-22, -17, -8, 0, 15, 30, 38], [0, 10, 24, 20, 11, 4, 0])
  sx = np.interp(y, [-20, -8, 10, 35], [13, 11, 7, 9])
  f['nose'] = h * _g(xf, sx) + 7.0 * _g(ax - 14, 5) * _g(y + 14, 5)
  f['cheeks'] = 9.0 * _g(ax - 42, 16) * _g(y + 5, 15)
  lip_w = np.clip(1 - (xf / 26) ** 2, 0, 1)
  f['lips'] = (6.0 * _g(y - MOUTH_Y - 5, 3.5) + 7.0 * _g(y - MOUTH_Y + 5.5, 4)
               - 4.0 * _g(y - MOUTH_Y, 1.2)) * lip_w
  f['chin'] = 6.0 * _g(y + 72, 8) * _g(xf, 16)
  return {k: v * front for k, v in f.items()}


@functools.lru_cache(maxsize=2)
def procedural_face_model(nu: int = NU, nv: int = NV) -> fm.FaceModel:
  """Builds the embedded face model (deterministic; cached)."""
  # Grid lines snapped to UV pixel centres of a 256 map, so every vertex (landmarks included)
  # sits exactly on a pixel of the position map.
  u, v = np.meshgrid(np.round(np.linspace(0, 255, nu)) / 255,
                     np.round(np.linspace(0, 255, nv)) / 255)  # (nv, nu), v up
  # UV layout like PRNet's: the face fills most of the map, ears, neck and crown are squeezed
  # into its borders. |2u - 1| = (t + sin(t pi / 2)) / 2 with t = |theta| / THETA_MAX, and v
  # piecewise linear in height.
  t_tab = np.linspace(0, 1, 2001)
  s_tab = 0.5 * t_tab + 0.5 * np.sin(t_tab * np.pi / 2)
  s = 2 * u - 1
  theta = np.sign(s) * THETA_MAX * np.interp(np.abs(s), s_tab, t_tab)
  y = np.interp(v, _V_KNOTS, _Y_KNOTS)
  a, b, zc = np.interp(y, _Y, _A), np.interp(y, _Y, _B), np.interp(y, _Y, _ZC)
  base = np.stack([a * np.sin(theta), y, zc + b * np.cos(theta)], -1)
  normal = np.stack([b * np.sin(theta), np.zeros_like(y), a * np.cos(theta)], -1)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  xf = a * np.sin(theta)                        # frontal x, the coordinate features live in
  front = _smoothstep(np.cos(theta), 0.05, 0.45)
  feats = _features(xf, y, front)
  ears = 14.0 * _g(np.abs(theta) - np.deg2rad(88), 0.16) * _g(y - 12, 17)
  mean = base + (sum(feats.values()) + ears)[..., None] * normal

  def field(d):  # (nv, nu, 3) -> flat vertex-interleaved column
    return np.asarray(d, np.float64).reshape(-1)

  zero = np.zeros_like(y)
  ax, sgn = np.abs(xf), np.sign(xf)
  lower = 1 - _smoothstep(y, -40, -20)
  nose_w = _g(y + 5, 18) * _g(xf, 15) * front
  eye_w = _g(ax - EYE_X, 12) * _g(y - EYE_Y, 8) * front
  eye_c = np.stack([sgn * EYE_X, np.full_like(y, EYE_Y), zero], -1)
  identity = [
      np.stack([0.07 * mean[..., 0], zero, zero], -1),                      # head width
      np.stack([zero, 0.05 * mean[..., 1], zero], -1),                      # head height
      np.stack([zero, zero, 0.08 * (mean[..., 2] - zc)], -1),               # head depth
      np.stack([0.12 * mean[..., 0] * lower, zero, zero], -1),              # jaw width
      0.35 * feats['nose'][..., None] * normal,                             # nose projection
      np.stack([0.3 * xf * nose_w, zero, zero], -1),                        # nose width
      np.stack([zero, -5.0 * nose_w * _g(y + 8, 10), zero], -1),            # nose length
      np.stack([3.0 * sgn * _g(ax - EYE_X, 12) * _g(y - EYE_Y, 10) * front, zero, zero], -1),
      0.4 * feats['lips'][..., None] * normal,                              # lip fullness
      np.stack([zero, -4.0 * _g(y + 75, 10) * _g(xf, 18),
                6.0 * _g(y + 75, 10) * _g(xf, 18) * front], -1),            # chin
      0.7 * feats['cheeks'][..., None] * normal,                            # cheeks
      0.8 * feats['brows'][..., None] * normal,                             # brow ridge
      np.stack([zero, zero, -8.0 * _smoothstep(y, 40, 100) * front], -1),  # forehead slope
      np.stack([zero, -6.0 * lower * (1 - _smoothstep(-y, 95, 110)), zero], -1),  # lower face
      (mean - eye_c) * (0.15 * eye_w)[..., None] * np.array([1, 1, 0]),    # eye size
      np.stack([2.5 * _g(xf - 30, 25) * front, 1.5 * _g(xf + 30, 25) * front,
                2.0 * _g(y - 10, 30) * _g(xf - 35, 20) * front], -1),       # asymmetry
  ]

  mouth_w = np.clip(1 - (xf / 30) ** 2, 0, 1) * front
  jaw = _smoothstep(-y, 39, 43) * (1 - _smoothstep(-y, 92, 112)) * _smoothstep(
      np.cos(theta), 0.1, 0.6)
  corners = _g(ax - 24, 7) * _g(y - MOUTH_Y, 7) * front
  expression = {
      'jaw_open': np.stack([zero, -14.0 * jaw, -4.0 * jaw], -1),
      'smile': np.stack([4.0 * sgn * corners, 5.0 * corners + 3.0 * _g(ax - 38, 12) * _g(
          y + 15, 10) * front, -2.0 * corners], -1),
      'brow_raise': np.stack([zero, 6.0 * _g(y - 35, 12) * front, zero], -1),
  }
  for name, sides in (('eye_close', (-1, 1)), ('right_eye_close', (-1,)),
                      ('left_eye_close', (1,))):
    # Fully closed at the lid margin (r = 1 / 1.25), fading over the lid skin above/below.
    w = sum(_eye_weight(xf, y, s, 1.25, (0.64, 3.5)) for s in sides) * front
    lid = np.clip(y - EYE_Y, -EYE_RY, EYE_RY)  # the opening closes; lid skin follows
    expression[name] = np.stack([zero, -0.92 * lid * w, zero], -1)
  expression['mouth_wide'] = np.stack([5.0 * sgn * _g(ax - 22, 8) * _g(y - MOUTH_Y, 8) * mouth_w,
                                       zero, zero], -1)
  assert tuple(expression) == EXPRESSIONS

  # Landmarks: nearest front vertex to each anatomical (x, y) position.
  kxy = _landmark_xy()
  cand = np.flatnonzero((np.cos(theta) > 0).reshape(-1))
  pts = np.stack([xf.reshape(-1)[cand], y.reshape(-1)[cand]], 1)
  landmarks = cand[np.argmin(((pts[None] - kxy[:, None]) ** 2).sum(-1), 1)]

  idx = np.arange(nu * nv).reshape(nv, nu)
  a_, b_, c_, d_ = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
  triangles = np.concatenate([np.stack([a_, b_, c_], -1).reshape(-1, 3),
                              np.stack([a_, c_, d_], -1).reshape(-1, 3)]).astype(np.int32)
  uv = np.stack([u.reshape(-1), v.reshape(-1)], 1).astype(np.float32)
  from prnet_jax.geometry import transforms
  regions = fm.regions_from_landmarks(transforms.uv_pixels(uv, 256), landmarks)
  albedo = _albedo(xf, y, theta, front)
  return fm.FaceModel(
      mean=mean.reshape(-1, 3).astype(np.float32),
      shape_basis=np.stack([field(d) for d in identity], 1).astype(np.float32),
      shape_ev=np.ones(len(identity), np.float32),
      exp_basis=np.stack([field(expression[k]) for k in EXPRESSIONS], 1).astype(np.float32),
      exp_ev=np.ones(len(EXPRESSIONS), np.float32),
      triangles=triangles, uv=uv, landmarks=landmarks.astype(np.int32), regions=regions,
      albedo=albedo.reshape(-1, 3).astype(np.float32), exp_names=EXPRESSIONS)


# Named colours of the albedo layers (linear RGB in [0, 1]).
SKIN = np.array([0.86, 0.66, 0.54])
HAIR = np.array([0.16, 0.11, 0.08])
LIPS = np.array([0.70, 0.36, 0.36])
MOUTH_INSIDE = np.array([0.22, 0.05, 0.06])
SCLERA = np.array([0.93, 0.92, 0.90])
IRIS = np.array([0.30, 0.20, 0.12])
PUPIL = np.array([0.03, 0.03, 0.03])


def _albedo(xf, y, theta, front):
  """Mean per-vertex colour: skin, hair, brows, lips, mouth inside, eyes, nostrils."""
  out = np.broadcast_to(SKIN, y.shape + (3,)).copy()

  def paint(weight, colour):
    w = np.clip(weight, 0, 1)[..., None]
    out[:] = out * (1 - w) + w * colour

  ax = np.abs(xf)
  neck = 1 - _smoothstep(y, -100, -88)
  paint(0.35 * neck, SKIN * 0.75)
  hairline = 80 - 18 * (1 - front) - 6 * (ax / 60) ** 2
  paint(_smoothstep(y, hairline - 2, hairline + 3), HAIR)
  paint(_smoothstep(np.abs(theta), np.deg2rad(96), np.deg2rad(99)) * _smoothstep(y, 20, 40), HAIR)
  brow_y = 33 + 6 * (1 - ((ax - 33) / 24) ** 2)
  paint(0.9 * _g(y - brow_y, 2.3) * _smoothstep(ax, 9, 14) * (1 - _smoothstep(ax, 54, 60))
        * front, HAIR)
  lip_w = np.clip(1 - (xf / 25) ** 2, 0, 1) ** 0.5 * front
  paint(lip_w * (_g(y - MOUTH_Y - 4.5, 3.0) + _g(y - MOUTH_Y + 5.0, 3.5)), LIPS)
  paint(1.5 * _g(y - MOUTH_Y, 0.9) * np.clip(1 - (xf / 22) ** 2, 0, 1) * front, MOUTH_INSIDE)
  for s in (-1, 1):
    inside = _eye_weight(xf, y, s, 1.0)
    paint(inside * front, SCLERA)
    r = np.hypot(xf - s * EYE_X, y - EYE_Y)
    paint((1 - _smoothstep(r, 5.6, 6.4)) * inside * front, IRIS)
    paint((1 - _smoothstep(r, 1.8, 2.4)) * inside * front, PUPIL)
    lash = np.exp(-((((xf - s * EYE_X) / EYE_RX) ** 2 + ((y - EYE_Y) / EYE_RY) ** 2 - 1.0)
                    / 0.25) ** 2)
    paint(0.7 * lash * front, HAIR)
    paint(0.8 * _g(xf - s * 6.5, 2.2) * _g(y + 18.5, 1.3) * front, PUPIL)  # nostrils
  return out
