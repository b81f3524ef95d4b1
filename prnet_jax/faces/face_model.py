"""One typed 3D morphable face model, its loaders, and PRNet's UV assets derived from it.

A `FaceModel` is a linear model: ``vertices = mean + shape_basis @ shape + exp_basis @ exp``
with bases stored flat and vertex-interleaved (x0, y0, z0, x1, ...) as in the Basel Face
Model, model space y up and z towards the viewer. It carries triangles, UV coordinates in
[0, 1] (v up, as `BFM_UV.mat`), the 68 landmark vertices (iBUG-68 order) and per-vertex regions.

Sources:
* `load_bfm(bfm_mat, bfm_uv_mat)`: face3d's `BFM.mat` + `BFM_UV.mat` (users bring BFM);
  `load_bfm_folder(dir)`: those, or the raw downloads via `prnet_jax.faces.bfm_generate`;
* `prnet_jax.faces.procedural_face.procedural_face_model()`: the embedded, code-built model.

`derive_uv_assets(model)` makes the PRNet assets (landmark UV positions, face mask and pixel
indices, grid triangles, canonical vertices, 16:4:3:0 weight mask) in the official formats.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from prnet_jax.faces.uv_assets import NUM_LANDMARKS, UVAssets, bilinear, grid_triangles
from prnet_jax.geometry import render, transforms

# Region labels (per vertex). Loss weights: landmarks 16, eyes/nose/mouth 4, face 3, other 0.
OTHER, FACE, EYES, NOSE, MOUTH = 0, 1, 2, 3, 4
REGION_NAMES = ('other', 'face', 'eyes', 'nose', 'mouth')
REGION_WEIGHTS = np.array([0.0, 3.0, 4.0, 4.0, 4.0], np.float32)
LANDMARK_WEIGHT = 16.0
LANDMARK_HALO_WEIGHT = 7.5  # the official mask has a ~120/255 halo around landmark pixels

# iBUG-68 groups.
JAW, BROWS, NOSE_PTS = slice(0, 17), slice(17, 27), slice(27, 36)
RIGHT_EYE, LEFT_EYE, MOUTH_PTS = slice(36, 42), slice(42, 48), slice(48, 68)
# The 68 points' mirror images (iBUG-68 order): point i of a face is point MIRROR_68[i] of the
# face flipped left to right.
MIRROR_68 = np.array([*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
                      45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                      54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66,
                      65])


class FaceModelError(ValueError):
  """A face model file is missing or malformed; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class FaceModel:
  """A linear 3DMM.

  Attributes:
    mean: (V, 3) float32 mean shape (with the mean expression).
    shape_basis: (3V, Ks) float32 identity basis (already scaled: shape params ~ N(0, ev^2)).
    shape_ev: (Ks,) standard deviations of the shape parameters.
    exp_basis: (3V, Ke) float32 expression basis.
    exp_ev: (Ke,) standard deviations of the expression parameters.
    triangles: (T, 3) int32 (counter-clockwise seen from the front in model space).
    uv: (V, 2) float32 UV coordinates in [0, 1], v up.
    landmarks: (68,) int32 landmark vertex indices, iBUG-68 order.
    regions: (V,) int8 region labels (OTHER, FACE, EYES, NOSE, MOUTH).
    albedo: optional (V, 3) float32 mean colour in [0, 1].
    exp_names: names of the expression components (when known).
    landmark_corners, landmark_weights: optional (68, 3) int32 vertices and (68, 3) float32
      barycentric weights: landmarks that are surface points, not vertices
      (`landmark_points`); `landmarks` then holds each one's nearest corner.
    landmark_taps_uv, landmark_taps_weights: optional (68, T, 2) float32 UV points ([0, 1],
      v up) and (68, T) float32 weights summing to 1 per landmark: how position maps of this
      model are read for the 68 landmarks (`UVAssets.kpt_taps` at any resolution), where
      that is not at the landmark points themselves (points beyond the trained face region,
      read from the face around them).
  """
  mean: np.ndarray
  shape_basis: np.ndarray
  shape_ev: np.ndarray
  exp_basis: np.ndarray
  exp_ev: np.ndarray
  triangles: np.ndarray
  uv: np.ndarray
  landmarks: np.ndarray
  regions: np.ndarray
  albedo: Optional[np.ndarray] = None
  exp_names: tuple[str, ...] = ()
  landmark_corners: Optional[np.ndarray] = None
  landmark_weights: Optional[np.ndarray] = None
  landmark_taps_uv: Optional[np.ndarray] = None
  landmark_taps_weights: Optional[np.ndarray] = None

  def __post_init__(self):
    v = self.mean.shape[0]
    checks = [
        (self.mean.shape == (v, 3), f'mean shape {self.mean.shape}'),
        (self.shape_basis.shape[0] == 3 * v, f'shape_basis rows {self.shape_basis.shape}'),
        (self.exp_basis.shape[0] == 3 * v, f'exp_basis rows {self.exp_basis.shape}'),
        (self.shape_ev.shape == (self.shape_basis.shape[1],), 'shape_ev length'),
        (self.exp_ev.shape == (self.exp_basis.shape[1],), 'exp_ev length'),
        (self.uv.shape == (v, 2), f'uv shape {self.uv.shape}'),
        (self.landmarks.shape == (NUM_LANDMARKS,), f'landmarks shape {self.landmarks.shape}'),
        (self.regions.shape == (v,), f'regions shape {self.regions.shape}'),
        (self.triangles.ndim == 2 and self.triangles.shape[1] == 3, 'triangles shape'),
        (self.triangles.size == 0 or (0 <= self.triangles.min() and self.triangles.max() < v),
         'triangle indices out of range'),
        (0 <= self.landmarks.min() and self.landmarks.max() < v, 'landmark indices out of range'),
        ((self.landmark_corners is None) == (self.landmark_weights is None),
         'landmark_corners and landmark_weights come together'),
    ]
    if self.landmark_corners is not None and self.landmark_weights is not None:
      c, w = self.landmark_corners, self.landmark_weights
      checks += [
          (c.shape == (NUM_LANDMARKS, 3) and w.shape == (NUM_LANDMARKS, 3),
           f'landmark corners/weights shapes {c.shape} / {w.shape}'),
          (c.size and 0 <= c.min() and c.max() < v, 'landmark corners out of range'),
          (np.allclose(np.sum(w, -1), 1, atol=1e-4) and np.all(w >= -1e-6),
           'landmark weights are not barycentric'),
      ]
    if (self.landmark_taps_uv is None) != (self.landmark_taps_weights is None):
      checks.append((False, 'landmark_taps_uv and landmark_taps_weights come together'))
    elif self.landmark_taps_uv is not None:
      tu, tw = self.landmark_taps_uv, self.landmark_taps_weights
      checks += [
          (tu.ndim == 3 and tu.shape[0] == NUM_LANDMARKS and tu.shape[2] == 2 and
           tw.shape == tu.shape[:2], f'landmark taps shapes {tu.shape} / {tw.shape}'),
          (np.all((tu >= 0) & (tu <= 1)), 'landmark tap UVs outside [0, 1]'),
          (np.allclose(np.sum(tw, -1), 1, atol=1e-4), 'landmark tap weights do not sum to 1'),
      ]
    for ok, what in checks:
      if not ok:
        raise FaceModelError(f'Inconsistent face model: {what}')

  @property
  def num_vertices(self) -> int:
    return self.mean.shape[0]

  def landmark_points(self, vertices):
    """(..., V, D) per-vertex values (positions, UV pixels) -> (..., 68, D) at the landmarks:
    the vertices, or the barycentric points when the model has them."""
    if self.landmark_corners is None:
      return vertices[..., self.landmarks, :]
    corners = vertices[..., self.landmark_corners, :]             # (..., 68, 3, D)
    return (corners * self.landmark_weights[:, :, None].astype(corners.dtype)).sum(-2)

  def vertices(self, shape_para=None, exp_para=None) -> np.ndarray:
    """(V, 3) float64 model-space vertices for the given parameters (zeros when omitted)."""
    flat = self.mean.reshape(-1).astype(np.float64)
    if shape_para is not None:
      flat = flat + self.shape_basis @ np.asarray(shape_para, np.float64).reshape(-1)
    if exp_para is not None:
      flat = flat + self.exp_basis @ np.asarray(exp_para, np.float64).reshape(-1)
    return flat.reshape(-1, 3)

  def uv_renderer(self, resolution: int = 256) -> render.UVRenderer:
    """Renders per-vertex values (e.g. cropped positions) into a UV map of this model."""
    return render.UVRenderer.create(transforms.uv_pixels(self.uv, resolution), self.triangles,
                                    resolution)


# ----------------------------------------------------------------------------- BFM (face3d)

def _loadmat(path: str) -> dict:
  from scipy import io as sio
  if not os.path.isfile(path):
    raise FaceModelError(f'{path}: file not found')
  try:
    return sio.loadmat(path)
  except Exception as e:  # scipy raises ValueError/TypeError/... for truncated files
    raise FaceModelError(f'{path}: cannot read .mat ({e})') from e


def load_bfm(bfm_mat: str, bfm_uv_mat: str) -> FaceModel:
  """Loads face3d's `BFM.mat` (struct `model`) and `BFM_UV.mat` (field `UV`).

  As face3d does: shapeMU + expMU is the mean, MATLAB 1-based `tri`, `tri_mouth` and `kpt_ind`
  become 0-based, and the mouth triangles are appended to the face triangles."""
  data = _loadmat(bfm_mat)
  if 'model' not in data:
    raise FaceModelError(f'{bfm_mat}: no struct "model" (expected face3d\'s BFM.mat)')
  m = data['model'][0, 0]
  uv_data = _loadmat(bfm_uv_mat)
  if 'UV' not in uv_data:
    raise FaceModelError(f'{bfm_uv_mat}: no field "UV" (expected BFM_UV.mat)')
  return bfm_from_fields({k: m[k] for k in m.dtype.names or ()}, uv_data['UV'], bfm_mat,
                         bfm_uv_mat)


def load_bfm_folder(folder: str) -> FaceModel:
  """The BFM from `folder`: face3d's `BFM.mat` + `BFM_UV.mat`, or else the raw downloads
  face3d's generate.m reads (`prnet_jax.faces.bfm_generate`), converted in memory."""
  bfm, uv = os.path.join(folder, 'BFM.mat'), os.path.join(folder, 'BFM_UV.mat')
  if os.path.isfile(bfm) or not os.path.isdir(folder):
    return load_bfm(bfm, uv)
  from prnet_jax.faces import bfm_generate
  if not bfm_generate.has_raw_bfm(folder):
    raise FaceModelError(f'{folder}: holds neither BFM.mat + BFM_UV.mat (face3d) nor '
                         f'raw/01_MorphableModel.mat with 3DDFA\'s files '
                         f'(python -m prnet_jax.faces.bfm_generate --help)')
  try:
    model, _, uv_coords = bfm_generate.generate(folder)
  except bfm_generate.BfmInputError as e:
    raise FaceModelError(str(e)) from e
  return bfm_from_fields(model, uv_coords, f'{folder} (generate.m port)', f'{folder} (UV)')


def bfm_from_fields(m: dict, uv: np.ndarray, bfm_mat: str, bfm_uv_mat: str) -> FaceModel:
  """face3d's `model` struct fields + (V, 2) UV -> FaceModel (names label the errors)."""
  names = tuple(m)
  need = ('shapeMU', 'shapePC', 'shapeEV', 'expMU', 'expPC', 'expEV', 'tri', 'kpt_ind')
  missing = [k for k in need if k not in names]
  if missing:
    raise FaceModelError(f'{bfm_mat}: model lacks fields {missing}')
  mean = (m['shapeMU'] + m['expMU']).astype(np.float64).reshape(-1)
  if mean.size % 3:
    raise FaceModelError(f'{bfm_mat}: shapeMU has {mean.size} values, not 3 per vertex')
  v = mean.size // 3

  def tri(x):
    x = np.asarray(x).astype(np.int64)
    return (x.T if x.shape[0] == 3 and x.shape[1] != 3 else x) - 1

  triangles = tri(m['tri'])
  if 'tri_mouth' in names and m['tri_mouth'].size:
    triangles = np.concatenate([triangles, tri(m['tri_mouth'])])
  landmarks = np.asarray(m['kpt_ind']).reshape(-1).astype(np.int64) - 1

  uv = np.asarray(uv, np.float64)
  if uv.shape != (v, 2):
    raise FaceModelError(f'{bfm_uv_mat}: UV has shape {uv.shape}, the model has {v} vertices')
  albedo = None
  if 'texMU' in names and m['texMU'].size == 3 * v:
    albedo = (m['texMU'].reshape(-1, 3) / 255.0).astype(np.float32)
  regions = regions_from_landmarks(transforms.uv_pixels(uv, 256), landmarks)
  try:
    return FaceModel(
        mean=mean.reshape(v, 3).astype(np.float32),
        shape_basis=np.asarray(m['shapePC'], np.float32),
        shape_ev=np.asarray(m['shapeEV'], np.float32).reshape(-1),
        exp_basis=np.asarray(m['expPC'], np.float32),
        exp_ev=np.asarray(m['expEV'], np.float32).reshape(-1),
        triangles=triangles.astype(np.int32), uv=uv.astype(np.float32),
        landmarks=landmarks.astype(np.int32), regions=regions, albedo=albedo)
  except FaceModelError as e:
    raise FaceModelError(f'{bfm_mat}: {e}') from e


# ----------------------------------------------------------------------------- regions

def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
  """Even-odd rule: (N, 2) points inside the closed (M, 2) polygon."""
  x, y = points[:, 0:1], points[:, 1:2]
  x0, y0 = polygon[:, 0][None], polygon[:, 1][None]
  x1, y1 = np.roll(polygon[:, 0], -1)[None], np.roll(polygon[:, 1], -1)[None]
  crosses = (y0 > y) != (y1 > y)
  with np.errstate(divide='ignore', invalid='ignore'):
    xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
  return (crosses & (x < xi)).sum(1) % 2 == 1


def _dilate(polygon: np.ndarray, amount: float) -> np.ndarray:
  """Pushes polygon vertices away from its centroid by `amount` (pixels)."""
  c = polygon.mean(0)
  d = polygon - c
  n = np.linalg.norm(d, axis=1, keepdims=True)
  return c + d * (1 + amount / np.maximum(n, 1e-9))


def convex_hull(points: np.ndarray) -> np.ndarray:
  """(N, 2) points -> (H, 2) their convex hull, in order (Andrew's monotone chain)."""
  pts = sorted(map(tuple, np.asarray(points, np.float64)))
  cross = lambda o, a, b: (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
  lower, upper = [], []
  for p in pts:
    while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
      lower.pop()
    lower.append(p)
  for p in reversed(pts):
    while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
      upper.pop()
    upper.append(p)
  return np.asarray(lower[:-1] + upper[:-1])


def regions_from_landmarks(uv_px: np.ndarray, landmarks: np.ndarray,
                           face_points: Optional[np.ndarray] = None) -> np.ndarray:
  """Per-vertex regions from the 68 landmarks' UV positions (works for any UV layout).

  face: the convex hull of the jaw line and the brows raised by 0.6 of the brow-to-nose height
  (the forehead), and of `face_points` (UV pixels) when given; eyes, nose and mouth: their
  landmark polygons, dilated by a fraction of the inter-ocular distance. Rows grow downwards
  (UV pixels)."""
  k = uv_px[landmarks]
  iod = np.linalg.norm(k[36] - k[45])
  brow_lift = 0.6 * (k[33, 1] - k[BROWS, 1].mean())
  forehead = k[BROWS][::-1] - np.array([0.0, brow_lift])
  # Convex: the brows' arches would leave peaks and a notch in the forehead's outline.
  face_poly = convex_hull(np.concatenate(
      [k[JAW], forehead] + ([] if face_points is None else [np.asarray(face_points)[:, :2]])))
  regions = np.full(len(uv_px), OTHER, np.int8)
  regions[_inside_polygon(uv_px, face_poly)] = FACE
  for sl, label, grow in ((MOUTH_PTS, MOUTH, 0.12), (RIGHT_EYE, EYES, 0.12),
                          (LEFT_EYE, EYES, 0.12)):
    regions[_inside_polygon(uv_px, _dilate(k[sl], grow * iod))] = label
  nose_poly = np.array([k[27] - [0.12 * iod, 0], k[31] - [0.1 * iod, 0.0],
                        k[33] + [0, 0.05 * iod], k[35] + [0.1 * iod, 0.0],
                        k[27] + [0.12 * iod, 0]])
  regions[_inside_polygon(uv_px, nose_poly)] = NOSE
  return regions


# ----------------------------------------------------------------------------- PRNet assets

# The face mask is opened by a disk of this fraction of the map: where a mesh's own border is
# ragged (ICT's face ends at the hairline in steps), the region's edge leaves one-pixel
# peninsulas and notches in the map, which the network cannot follow and the mesh shows as
# strips and notches cut into the forehead.
SMOOTH_FRACTION = 2.5 / 64


def _disk_filter(mask: np.ndarray, radius: int, grow: bool) -> np.ndarray:
  """Binary erosion (grow=False) or dilation (True) of a 2D mask by a disk; outside is empty."""
  r = radius
  padded = np.pad(mask, r, constant_values=False)
  out = np.zeros_like(mask) if grow else np.ones_like(mask)
  h, w = mask.shape
  for dy in range(-r, r + 1):
    for dx in range(-r, r + 1):
      if dy * dy + dx * dx <= r * r:
        shifted = padded[r + dy:r + dy + h, r + dx:r + dx + w]
        out = (out | shifted) if grow else (out & shifted)
  return out


def trim_ragged_top(mask: np.ndarray) -> np.ndarray:
  """(R, R) bool mask without its top rows down to the first row that is one unbroken run:
  where the mesh's own top edge is ragged (ICT's face ends at the hairline in steps), the
  forehead's last rows are combs of gaps."""
  mask = np.asarray(mask, bool).copy()
  for r in np.nonzero(mask.any(1))[0]:
    idx = np.nonzero(mask[r])[0]
    if len(idx) == idx[-1] - idx[0] + 1:
      break
    mask[r] = False
  return mask


def smooth_mask(mask: np.ndarray, radius: int) -> np.ndarray:
  """(R, R) bool mask opened by a disk of `radius` pixels (erosion, then dilation within the
  mask): peninsulas and bridges thinner than the disk go, the rest keeps its outline."""
  mask = np.asarray(mask, bool)
  return _disk_filter(_disk_filter(mask, radius, False), radius, True) & mask


def _render_labels(renderer: render.UVRenderer, values: np.ndarray) -> np.ndarray:
  """Nearest-vertex (largest barycentric weight) lookup of per-vertex labels in UV space."""
  ids = np.asarray(renderer.vertex_ids)
  w = np.asarray(renderer.weights)
  nearest = np.take_along_axis(ids, w.argmax(-1)[..., None], -1)[..., 0]
  out = np.asarray(values)[nearest]
  out[~np.asarray(renderer.mask)] = 0
  return out


def canonical_frame_vertices(model: FaceModel, resolution: int = 256) -> np.ndarray:
  """(V, 3) mean shape, frontal, in a position-map frame: y down, landmark-box crop of the
  300W-LP procedure (no perturbation) so the face fills the crop like a training sample."""
  v = model.vertices()
  span = np.ptp(v[model.landmarks, :2], axis=0).mean()
  scale = 0.6 * resolution / span  # any scale works: the crop normalises it
  pose = [0, 0, 0, resolution / 2, resolution / 2, 0, scale]
  sample = transforms.position_map_from_3dmm(v, pose, resolution, model.landmarks, resolution)
  return sample.positions


def landmark_taps(model: FaceModel, resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """The model's landmark taps (`landmark_taps_uv`, `landmark_taps_weights`) on a
  `resolution`-px map: (68, T') int32 flat pixel indices and (68, T') float32 weights (each UV
  point read bilinearly; a point on a pixel centre is that pixel; zero-weight taps padded)."""
  tu = np.asarray(model.landmark_taps_uv, np.float64)
  n, t = tu.shape[:2]
  px = transforms.uv_pixels(tu.reshape(-1, 2), resolution)
  snapped = np.round(px)
  # Pixel centres stay exact (UVs are float32: ~1e-5 px of round-off at 256 px).
  px = np.where(np.abs(px - snapped) < 1e-3, snapped, px)
  u, v, w = bilinear(px, resolution)
  flat = (v.astype(np.int64) * resolution + u).reshape(n, 4 * t)
  w = (w.reshape(n, t, 4).astype(np.float64)
       * np.asarray(model.landmark_taps_weights, np.float64)[:, :, None]).reshape(n, 4 * t)
  rows = []
  for k in range(n):  # one tap per pixel, zero weights dropped
    pix, col = np.unique(flat[k], return_inverse=True)
    acc = np.zeros(len(pix))
    np.add.at(acc, col, w[k])
    keep = np.abs(acc) > 1e-9
    rows.append((pix[keep], acc[keep]))
  width = max(len(p) for p, _ in rows)
  taps = np.zeros((n, width), np.int32)
  weights = np.zeros((n, width), np.float32)
  for k, (pix, acc) in enumerate(rows):
    taps[k, :len(pix)], taps[k, len(pix):] = pix, pix[0]
    weights[k, :len(pix)] = acc / acc.sum()  # exactly affine after float rounding
  return taps, weights


def derive_uv_assets(model: FaceModel, resolution: int = 256) -> UVAssets:
  """PRNet's UV assets for `model`, in the official formats and meanings (see uv_assets)."""
  renderer = model.uv_renderer(resolution)
  labels = _render_labels(renderer, model.regions)
  face_mask = smooth_mask(trim_ragged_top(labels != OTHER),
                          max(1, round(resolution * SMOOTH_FRACTION)))
  labels = np.where(face_mask, labels, OTHER)
  face_mask = face_mask.astype(np.float32)
  subpixel = np.clip(model.landmark_points(transforms.uv_pixels(model.uv, resolution)),
                     0, resolution - 1).astype(np.float32)
  kpt_uv = np.round(subpixel).astype(np.int32)  # of the float32 values the assets keep
  weights = REGION_WEIGHTS[labels]
  # Landmark pixels get 16 and a one-pixel halo, as in the official mask.
  for u, v in kpt_uv:
    r0, r1, c0, c1 = max(v - 1, 0), min(v + 2, resolution), max(u - 1, 0), min(u + 2, resolution)
    weights[r0:r1, c0:c1] = np.maximum(weights[r0:r1, c0:c1], LANDMARK_HALO_WEIGHT)
  weights[kpt_uv[:, 1], kpt_uv[:, 0]] = LANDMARK_WEIGHT
  face_mask[kpt_uv[:, 1], kpt_uv[:, 0]] = 1.0  # landmarks are always face pixels
  if model.landmark_corners is not None:
    # ... and so are the four pixels each sub-pixel landmark is read from (trained, in the mesh).
    lo = np.minimum(np.floor(subpixel).astype(np.int32), resolution - 2)
    for du in (0, 1):
      for dv in (0, 1):
        u, v = lo[:, 0] + du, lo[:, 1] + dv
        weights[v, u] = np.where(face_mask[v, u] > 0, weights[v, u], LANDMARK_HALO_WEIGHT)
        face_mask[v, u] = 1.0
  taps = tap_weights = None
  if model.landmark_taps_uv is not None:
    taps, tap_weights = landmark_taps(model, resolution)
    # ... and so are the pixels the landmarks are read from.
    v, u = np.divmod(taps[tap_weights != 0], resolution)
    weights[v, u] = np.where(face_mask[v, u] > 0, weights[v, u], REGION_WEIGHTS[FACE])
    face_mask[v, u] = 1.0
  # Outside the face the official weight mask still holds the plain-face weight (48/255);
  # only the product with the face mask is zero there.
  weights = np.where(face_mask > 0, weights, REGION_WEIGHTS[FACE]).astype(np.float32)
  face_indices = np.flatnonzero(face_mask.reshape(-1) > 0).astype(np.int32)
  canonical_map = np.asarray(renderer(canonical_frame_vertices(model, resolution)))
  canonical = canonical_map.reshape(-1, 3)[face_indices].astype(np.float32)
  return UVAssets(kpt_uv=kpt_uv, face_indices=face_indices, face_mask=face_mask,
                  kpt_uv_subpixel=(None if model.landmark_corners is None
                                   else subpixel),
                  kpt_taps=taps, kpt_tap_weights=tap_weights,
                  weight_mask=weights, canonical_vertices=canonical,
                  triangles=grid_triangles(face_mask))
