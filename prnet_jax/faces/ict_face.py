"""The ICT-FaceKit model as a `FaceModel` for position maps, and its face samplers.

    model = ict_face.face_model()                 # FaceModel: face, forehead, ears, neck
    identity = ict_face.sample_identity(rng)      # (40,) ~ N(0, 1), ICT's own statistics
    expression = ict_face.sample_expression(rng)  # (53,) a sparse, plausible combination
    vertices = model.vertices(identity, expression)

The position map covers the face, forehead, ears and neck (ICT's `face` and `head_and_neck`
parts within the map); eyes, teeth and the mouth interior are rendering parts (`ict_model`).

UV layout: spherical coordinates about a point between the ears at eye height (longitude
right-left, latitude up-down), mapped linearly so that the 68 landmarks fall where PRNet's
official layout has them (jaw ends at columns 15 and 240, brows at row 39, chin at row 193 of
256), so the face is centred and fills the map like PRNet's. A face is star-shaped about that
point, so the layout has no folds under the nose or chin (a cylindrical unwrap has). Two
layouts (`LAYOUTS`): 'ict' maps ICT's own landmark vertices there (on pixel centres; the
bundled model's), 'ict_bfm68' the benchmark's BFM-68 points (its jaw reaches the sides of the
head, and the map reaches further back).

Landmarks: the 68 points are the benchmark's (BFM-68, as 300W-LP and AFLW2000-3D define them)
placed on ICT's surface by `landmark_calibration` (a triangle and barycentric weights each, so
they move with identity and expression); the UV assets read them between pixel centres
(`UVAssets.kpt_uv_subpixel`). In the 'ict' layout the jaw's BFM-68 points lie beyond the face
region it trains (1-3 cm further out on the skin): its maps are read for them from the face
pixels around them (`landmark_taps`, `UVAssets.kpt_taps`). Units: centimetres.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import numpy as np

from prnet_jax import assets
from prnet_jax.faces import face_model as fm
from prnet_jax.faces import ict_model

# Where PRNet's official 256 px UV layout puts landmarks (uv_kpt_ind.txt): jaw ends 0 / 16 at
# columns 15 / 240, the brows' middles (19, 24) at row 39, the chin (8) at row 193.
_JAW_COLUMNS = (15.0, 240.0)
_BROW_ROW, _CHIN_ROW = 39.0, 193.0
_SIZE = 256
# The benchmark's 68 landmarks on ICT's surface (written by `landmark_calibration`): ICT vertex
# corners (68, 3) and barycentric weights (68, 3), one file per layout.
LANDMARK_POINTS = assets.path('ict_landmarks_bfm68.npz')
LANDMARK_POINTS_SKIN = assets.path('ict_landmarks_bfm68_skin.npz')
# Layouts, by UV-assets name:
#   'ict': ICT's own landmarks where PRNet's layout has its landmarks; the BFM-68 points on
#     ICT's face region (whose jaw stops short of BFM's: the jaw's upper ends are ~2 cm behind
#     it, beside the ears, and fall on this map's borders);
#   'ict_bfm68': the BFM-68 points anywhere on ICT's skin (the jaw's upper ends beside the ears)
#     and the layout fitted to them, so that the benchmark's landmarks fall where PRNet's layout
#     has them (the map reaches further back and the face is ~10% narrower in it).
LAYOUTS = {'ict': LANDMARK_POINTS, 'ict_bfm68': LANDMARK_POINTS_SKIN}
# How the 'ict' layout's maps are read for the 68 landmarks (written by `landmark_taps`): the
# jaw as the BFM-68 points on ICT's skin, from the face pixels around them (the points lie
# beyond the face region the 'ict' layout trains); the rest at their points.
LANDMARK_TAPS = {'ict': assets.path('ict_landmark_taps.npz')}


def _spherical(vertices: np.ndarray, centre: np.ndarray) -> np.ndarray:
  """(V, 2) longitude (towards +x) and latitude (towards +y), radians, about `centre`."""
  d = vertices - centre
  lon = np.arctan2(d[:, 0], d[:, 2])
  lat = np.arctan2(d[:, 1], np.hypot(d[:, 0], d[:, 2]))
  return np.stack([lon, lat], 1)


def landmark_points(ict: ict_model.ICTModel, path: str) -> np.ndarray:
  """(68, 3) the calibrated landmarks of `path` on ICT's neutral face (float64)."""
  with np.load(path) as d:
    corners, weights = d['corners'].astype(np.int64), d['weights'].astype(np.float64)
  if corners.shape != (68, 3) or weights.shape != (68, 3) or corners.min() < 0 or \
      corners.max() >= len(ict.neutral):
    raise ict_model.ICTModelError(f'{path}: expected corners and weights (68, 3) over ICT\'s '
                                  f'{len(ict.neutral)} vertices')
  return (weights[:, :, None] * ict.neutral.astype(np.float64)[corners]).sum(1)


def uv_layout(ict: ict_model.ICTModel, anchors: Optional[np.ndarray] = None) -> np.ndarray:
  """(V, 2) UV-map pixels (column, row; rows down) of the 256 map for every ICT vertex.

  `anchors` (68, 3): the landmarks placed where PRNet's layout has its own (jaw ends, brows,
  chin); ICT's own landmark vertices by default."""
  v = ict.neutral.astype(np.float64)
  lm = v[ict.landmarks]
  # Between the ears at eye height: x on the mid-line, z halfway between the ears' front.
  centre = np.array([0.0, lm[[36, 45], 1].mean(), 0.0])
  sph = _spherical(v, centre)
  s = _spherical(lm if anchors is None else np.asarray(anchors, np.float64), centre)
  cols = 127.5 + (sph[:, 0] - s[[0, 16], 0].mean()) * (
      (_JAW_COLUMNS[1] - _JAW_COLUMNS[0]) / (s[16, 0] - s[0, 0]))
  brow = s[[19, 24], 1].mean()
  rows = _BROW_ROW + (brow - sph[:, 1]) * ((_CHIN_ROW - _BROW_ROW) / (brow - s[8, 1]))
  return np.stack([cols, rows], 1)


def signed_areas(px: np.ndarray, tris: np.ndarray) -> np.ndarray:
  """(T,) twice each triangle's signed area in pixel coordinates (px (V, 2))."""
  a = px[tris]
  return ((a[:, 1, 0] - a[:, 0, 0]) * (a[:, 2, 1] - a[:, 0, 1])
          - (a[:, 2, 0] - a[:, 0, 0]) * (a[:, 1, 1] - a[:, 0, 1]))


def boundary_loops(tris: np.ndarray) -> list[list[int]]:
  """Closed loops of the edges used by one triangle only, each in the triangles' winding."""
  edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
  key = np.sort(edges, 1)
  _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
  border = edges[counts[inverse.reshape(-1)] == 1]
  outgoing: dict[int, list[int]] = {}
  for e, (a, _) in enumerate(border):
    outgoing.setdefault(int(a), []).append(e)
  used = np.zeros(len(border), bool)
  loops = []
  for first in range(len(border)):
    if used[first]:
      continue
    loop, e = [], first
    while not used[e]:  # follow unused border edges (a pinch vertex has two)
      used[e] = True
      loop.append(int(border[e, 0]))
      free = [f for f in outgoing.get(int(border[e, 1]), []) if not used[f]]
      if not free:
        break
      e = free[0]
    if int(border[e, 1]) == loop[0] and len(loop) >= 3:
      loops.append(loop)
  return loops


def _ear_clip(poly: np.ndarray, sign: float) -> list[tuple[int, int, int]]:
  """Ear-clipping triangulation of a simple polygon (N, 2) whose triangles' signed area has
  `sign`; returns index triples in the polygon's order."""
  idx = list(range(len(poly)))
  out = []
  cross = lambda a, b, c: ((b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]))
  guard = 0
  while len(idx) > 3 and guard < 10 * len(poly) ** 2:
    guard += 1
    for k in range(len(idx)):
      i, j, l = idx[k - 1], idx[k], idx[(k + 1) % len(idx)]
      if sign * cross(poly[i], poly[j], poly[l]) <= 0:
        continue  # reflex (or flat) corner
      others = [m for m in idx if m not in (i, j, l)]
      tri = poly[[i, j, l]]
      if any(all(sign * cross(tri[e], tri[(e + 1) % 3], poly[m]) > 0 for e in range(3))
             for m in others):
        continue  # another vertex inside: not an ear
      out.append((i, j, l))
      idx.pop(k)
      break
    else:
      break  # no ear found (numerically degenerate): fan the rest
  out += [(idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1)]
  return out


@functools.lru_cache(maxsize=None)
def layout_pixels(layout: str = 'ict') -> np.ndarray:
  """(V, 2) the 256 px UV-map position of every ICT vertex in `layout` (one of LAYOUTS)."""
  if layout not in LAYOUTS:
    raise ValueError(f'unknown ICT layout {layout!r}: one of {sorted(LAYOUTS)}')
  ict = ict_model.load()
  px = uv_layout(ict, None if layout == 'ict' else landmark_points(ict, LAYOUTS[layout]))
  if layout == 'ict':  # ICT's own landmarks on pixel centres (as the bundled model learned)
    px[ict.landmarks] = np.round(px[ict.landmarks])
  px.flags.writeable = False
  return px


def _load_taps(path: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    with np.load(path) as d:
      uv, weights = d['uv'].astype(np.float32), d['weights'].astype(np.float32)
  except (OSError, KeyError, ValueError) as e:
    raise ict_model.ICTModelError(f'{path}: not a landmark-taps file with uv and weights '
                                  f'({e}); re-create it with python -m '
                                  'prnet_jax.faces.landmark_taps') from e
  return uv, weights


@functools.lru_cache(maxsize=None)
def _model(layout: str = 'ict', taps: bool = True) -> tuple[fm.FaceModel, np.ndarray]:
  if layout not in LAYOUTS:
    raise ValueError(f'unknown ICT layout {layout!r}: one of {sorted(LAYOUTS)}')
  ict = ict_model.load()
  points_file = LAYOUTS[layout]
  px = layout_pixels(layout).copy()
  surface = np.zeros(len(ict.neutral), bool)
  surface[ict.part('face')] = surface[ict.part('head_and_neck')] = True
  inside = surface & np.all((px >= 0) & (px <= _SIZE - 1), 1)
  tris = ict.triangles[inside[ict.triangles].all(1)]
  # Surfaces that turn away from the viewer (the inner lips, nostrils, the eyelids' inner rims)
  # fold over in any unwrap: leave them out, then close the holes they and the eye and mouth
  # openings leave (every loop but the map's outer border) like PRNet's BFM surface, which is
  # closed over the eyes and mouth.
  areas = signed_areas(px, tris)
  sign = float(np.sign(np.median(areas)))
  tris = tris[np.sign(areas) == sign]
  loops = boundary_loops(tris)
  outer = max(loops, key=len)
  caps = []
  for loop in loops:
    if loop is outer:
      continue
    poly = px[loop]
    own = float(np.sign(np.sum(poly[:, 0] * np.roll(poly[:, 1], -1)
                               - np.roll(poly[:, 0], -1) * poly[:, 1])))
    for i, j, k in _ear_clip(poly, own):  # a hole runs against the surface: flip to match it
      caps.append([loop[i], loop[j], loop[k]] if own == sign else [loop[i], loop[k], loop[j]])
  if caps:
    caps = np.asarray(caps, tris.dtype)
    # Ear clipping falls back to a fan on numerically degenerate loops: keep what is not folded.
    tris = np.concatenate([tris, caps[np.sign(signed_areas(px, caps)) == sign]])
  keep = np.unique(np.concatenate([tris.reshape(-1), ict.landmarks]))
  new = np.full(len(ict.neutral), -1, np.int64)
  new[keep] = np.arange(len(keep))
  uv = np.stack([px[keep, 0] / (_SIZE - 1), 1 - px[keep, 1] / (_SIZE - 1)], 1)
  # Regions (eyes, nose, mouth loss weights) from ICT's own landmark vertices; the 68
  # landmarks themselves are the benchmark's (BFM-68) points on ICT's surface.
  with np.load(points_file) as d:
    corners, weights = new[d['corners'].astype(np.int64)], d['weights'].astype(np.float64)
  if np.any(corners < 0):
    raise ict_model.ICTModelError(
        f'{points_file}: landmarks {np.flatnonzero((corners < 0).any(1)).tolist()} lie outside '
        f'the {layout!r} position-map surface')
  # The face region (trained, meshed) holds both definitions' jaws.
  points_px = (weights[:, :, None] * px[keep][corners]).sum(1)
  regions = fm.regions_from_landmarks(px[keep], new[ict.landmarks], face_points=points_px)
  landmarks = corners[np.arange(len(corners)), np.argmax(weights, 1)]
  ki, ke = len(ict.identity_modes), len(ict.expression_modes)
  model = fm.FaceModel(
      mean=ict.neutral[keep].astype(np.float32),
      shape_basis=ict.identity_modes[:, keep].transpose(1, 2, 0).reshape(-1, ki),
      shape_ev=np.ones(ki, np.float32),  # ICT's identity weights are ~ N(0, 1)
      exp_basis=ict.expression_modes[:, keep].transpose(1, 2, 0).reshape(-1, ke),
      exp_ev=np.ones(ke, np.float32),    # blendshape weights in [0, 1]
      triangles=new[tris].astype(np.int32), uv=uv.astype(np.float32),
      landmarks=landmarks.astype(np.int32), regions=regions,
      exp_names=ict.expression_names, landmark_corners=corners.astype(np.int32),
      landmark_weights=weights.astype(np.float32))
  if taps and layout in LANDMARK_TAPS:
    uv, tap_weights = _load_taps(LANDMARK_TAPS[layout])
    model = dataclasses.replace(model, landmark_taps_uv=uv, landmark_taps_weights=tap_weights)
  return model, keep


def face_model(layout: str = 'ict', taps: bool = True) -> fm.FaceModel:
  """The position-map FaceModel of the shipped ICT model in `layout` (one of LAYOUTS; cached);
  `taps=False`: without the layout's landmark taps (the points themselves are read)."""
  return _model(layout, taps)[0]


def ict_vertices(layout: str = 'ict') -> np.ndarray:
  """(V',) the ICT vertex (over `ict_model.load()`'s numbering) of each `face_model(layout)`
  vertex."""
  return _model(layout, False)[1]  # the same vertices with or without taps


# ------------------------------------------------------------------------------ sampling

def sample_identity(rng: np.random.Generator, components: int = ict_model.IDENTITY_COMPONENTS
                    ) -> np.ndarray:
  """ICT's identity weights: independent N(0, 1) (its modes carry their own scale)."""
  return rng.normal(size=components).astype(np.float32)


# Expression "moves": (probability, {blendshape: weight range}, one-sided). A sided shape
# (`_L` / `_R`) acts on both sides, the second slightly weaker, unless the move is one-sided
# (winks, half smiles). A sample draws a few moves; their weights add (clipped to [0, 1]).
_SIDES = ('_L', '_R')
MOVES = (
    (0.35, {'mouthSmile': (0.3, 1.0), 'cheekSquint': (0.0, 0.5), 'eyeSquint': (0.0, 0.4)}, False),
    (0.25, {'jawOpen': (0.1, 0.9)}, False),
    (0.20, {'eyeBlink': (0.6, 1.0)}, False),
    (0.10, {'eyeBlink': (0.7, 1.0)}, True),                # a wink
    (0.20, {'browInnerUp': (0.3, 1.0), 'browOuterUp': (0.2, 1.0)}, False),
    (0.15, {'browDown': (0.3, 1.0)}, False),
    (0.10, {'mouthPucker': (0.3, 1.0)}, False),
    (0.10, {'mouthFunnel': (0.2, 0.8), 'jawOpen': (0.1, 0.4)}, False),
    (0.15, {'eyeSquint': (0.3, 1.0)}, False),
    (0.10, {'eyeWide': (0.3, 1.0)}, False),
    (0.10, {'mouthFrown': (0.3, 1.0), 'mouthStretch': (0.0, 0.5)}, False),
    (0.10, {'mouthSmile': (0.3, 0.9)}, True),              # a half smile
    (0.08, {'noseSneer': (0.3, 1.0), 'mouthUpperUp': (0.0, 0.6)}, False),
    (0.08, {'cheekPuff': (0.3, 1.0), 'mouthClose': (0.0, 0.3)}, False),
    (0.08, {'mouthLeft': (0.2, 0.8)}, False),
    (0.08, {'jawLeft': (0.2, 0.7)}, False),
    (0.06, {'mouthRollLower': (0.2, 0.8), 'mouthRollUpper': (0.2, 0.8)}, False),
    (0.06, {'mouthPress': (0.3, 1.0)}, False),
    (0.10, {'eyeLookUp': (0.2, 0.8)}, False),
    (0.10, {'eyeLookDown': (0.2, 0.8)}, False),
    (0.10, {'eyeLookIn': (0.2, 0.8)}, False),
)
_MIRRORED_SWAP = {'mouthLeft': 'mouthRight', 'jawLeft': 'jawRight'}


def _apply(out: np.ndarray, index: dict[str, int], name: str, weight: float) -> None:
  out[index[name]] = min(1.0, out[index[name]] + weight)


def sample_expression(rng: np.random.Generator, names: tuple[str, ...] = ()) -> np.ndarray:
  """(53,) expression weights in [0, 1]: a few plausible moves (smiles, jaw open, blinks and
  winks, brow raise and frown, pucker, squints, sneer, gaze ...), each possibly asymmetric,
  or neutral (~20% of samples). Sparse: most weights are 0."""
  names = names or face_model(taps=False).exp_names
  index = {n: i for i, n in enumerate(names)}
  out = np.zeros(len(names), np.float32)
  for p, shapes, one_sided in MOVES:
    if rng.random() >= p:
      continue
    side = _SIDES[rng.integers(2)]
    asym = 1.0 if one_sided else rng.uniform(0.7, 1.0)  # a little asymmetry always
    for shape, (lo, hi) in shapes.items():
      w = rng.uniform(lo, hi)
      if shape in _MIRRORED_SWAP:
        _apply(out, index, shape if side == '_L' else _MIRRORED_SWAP[shape], w)
      elif shape in index:
        _apply(out, index, shape, w)
      elif one_sided:
        _apply(out, index, shape + side, w)
      else:
        other = _SIDES[1 - _SIDES.index(side)]
        _apply(out, index, shape + side, w)
        _apply(out, index, shape + other, w * asym)
  return out
