"""PRNet's UV-space assets as one typed object, in the official files' formats and meanings.

Files of the official ``Data/uv-data/`` folder (all 256x256 UV space, row = v, column = u):

* ``uv_kpt_ind.txt``: 2x68 floats, row 0 = u (column), row 1 = v (row) of the 68 landmarks;
  a landmark is read as ``pos[v, u]``.
* ``face_ind.txt``: flat row-major indices of the face pixels (43,867 officially).
* ``uv_face_mask.png``: 8-bit gray, 255 on the face, 0 elsewhere.
* ``uv_weight_mask.png``: 8-bit gray, 255 on landmark pixels (a halo around them), 64 on
  eyes/nose/mouth, 48 on the rest; zero outside the face only after multiplying by the face mask.
* ``canonical_vertices.npy``: (num_face_pixels, 3) canonical face, used for pose estimation.
* ``triangles.txt`` (optional): (T, 3) triangles over the face pixels, from the UV pixel grid;
  derived from the face mask when absent.
* ``uv_kpt_subpixel.txt`` (optional, this project's): 2x68 floats, the landmarks' exact UV
  positions when they lie between pixel centres; a landmark is then read by bilinear
  interpolation of the map (``uv_kpt_ind.txt`` keeps the nearest pixels, the official meaning).
* ``uv_kpt_taps.txt`` (optional, this project's): 68 rows of T flat pixel indices followed by
  T weights: each landmark an affine combination of map pixels (weights summing to 1, so it
  moves with every rotation, scale and translation of the map). It reads landmarks that lie
  beyond the trained face region from the face pixels around them (the 'ict' layout's jaw);
  ``uv_kpt_ind.txt`` then keeps the pixels the loss weights mark.

``weight_mask`` is held in relative units: ``png * 16 / 255``, so landmark : eyes/nose/mouth :
face = 16 : 4 : 3 (4.02 and 3.01 exactly, as the PNG rounds them), and neck/background 0
after ``loss_weights`` multiplies by the face mask.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

NUM_LANDMARKS = 68
WEIGHT_PNG_SCALE = 16.0 / 255.0  # PNG value of a landmark pixel (255) -> relative weight 16.

FILES = ('uv_kpt_ind.txt', 'face_ind.txt', 'uv_face_mask.png', 'uv_weight_mask.png',
         'canonical_vertices.npy')


class AssetError(ValueError):
  """A UV asset file is missing or malformed; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class UVAssets:
  """UV-space assets of a position map of side `resolution`.

  Attributes:
    kpt_uv: (68, 2) int32, (u, v) = (column, row) of each landmark.
    face_indices: (N,) int32 flat row-major indices of face pixels, ascending.
    face_mask: (R, R) float32 in {0, 1}.
    weight_mask: (R, R) float32 relative weights (landmark 16, eyes/nose/mouth 4, face 3).
    canonical_vertices: (N, 3) float32.
    triangles: (T, 3) int32 indices into the N face vertices.
    kpt_uv_subpixel: optional (68, 2) float32 exact (u, v) of landmarks between pixel centres
      (read bilinearly); `kpt_uv` is then its rounding.
    kpt_taps, kpt_tap_weights: optional (68, T) int32 flat pixel indices and (68, T) float32
      weights (each row sums to 1): landmarks read as affine combinations of map pixels,
      instead of `kpt_uv` / `kpt_uv_subpixel` (which then only mark the loss weights).
  """
  kpt_uv: np.ndarray
  face_indices: np.ndarray
  face_mask: np.ndarray
  weight_mask: np.ndarray
  canonical_vertices: np.ndarray
  triangles: np.ndarray
  kpt_uv_subpixel: Optional[np.ndarray] = None
  kpt_taps: Optional[np.ndarray] = None
  kpt_tap_weights: Optional[np.ndarray] = None

  def __post_init__(self):
    r = self.resolution
    checks = [
        (self.kpt_uv.shape == (NUM_LANDMARKS, 2), f'kpt_uv shape {self.kpt_uv.shape}'),
        (self.face_mask.shape == (r, r), f'face_mask shape {self.face_mask.shape}'),
        (self.weight_mask.shape == (r, r), f'weight_mask shape {self.weight_mask.shape}'),
        (self.canonical_vertices.shape == (len(self.face_indices), 3),
         f'canonical_vertices shape {self.canonical_vertices.shape} for '
         f'{len(self.face_indices)} face pixels'),
        (self.triangles.ndim == 2 and self.triangles.shape[1] == 3,
         f'triangles shape {self.triangles.shape}'),
    ]
    if self.kpt_uv_subpixel is not None:
      k = self.kpt_uv_subpixel
      checks += [(k.shape == (NUM_LANDMARKS, 2) and np.all(k >= 0) and np.all(k <= r - 1),
                  f'kpt_uv_subpixel shape {k.shape} or values outside [0, {r - 1}]'),
                 (np.array_equal(np.round(k).astype(np.int32), self.kpt_uv),
                  'kpt_uv is not the rounding of kpt_uv_subpixel')]
    if (self.kpt_taps is None) != (self.kpt_tap_weights is None):
      checks.append((False, 'kpt_taps and kpt_tap_weights come together'))
    elif self.kpt_taps is not None:
      t, w = self.kpt_taps, self.kpt_tap_weights
      checks += [(t.ndim == 2 and t.shape[0] == NUM_LANDMARKS and w.shape == t.shape,
                  f'kpt_taps / kpt_tap_weights shapes {t.shape} / {w.shape}'),
                 (t.size > 0 and t.min() >= 0 and t.max() < r * r,
                  f'kpt_taps outside the {r}x{r} map'),
                 (np.allclose(np.sum(w, -1), 1.0, atol=1e-4),
                  'kpt_tap_weights rows do not sum to 1 (not an affine combination)')]
    for ok, what in checks:
      if not ok:
        raise AssetError(f'Inconsistent UV assets: {what}')

  @property
  def resolution(self) -> int:
    return self.face_mask.shape[0]

  @property
  def loss_weights(self) -> np.ndarray:
    """(R, R) float32 per-pixel loss weights: weight mask x face mask (16:4:3:0)."""
    return (self.weight_mask * self.face_mask).astype(np.float32)

  def landmarks(self, pos):
    """(..., R, R, 3) position maps -> (..., 68, 3) landmarks (works on NumPy and JAX arrays):
    the landmark pixels, bilinear samples at the sub-pixel positions, or the affine taps
    (`kpt_taps`), whichever the assets give."""
    if self.kpt_taps is not None:
      return read_taps(pos, self.kpt_taps, self.kpt_tap_weights)
    if self.kpt_uv_subpixel is None:
      return pos[..., self.kpt_uv[:, 1], self.kpt_uv[:, 0], :]
    return sum(w[:, None].astype(pos.dtype) * pos[..., v, u, :]
               for u, v, w in self.bilinear_taps())

  def bilinear_taps(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The four (u (68,), v (68,), weight (68,)) taps of each landmark's bilinear sample (one
    tap of weight 1 per landmark without sub-pixel positions)."""
    if self.kpt_uv_subpixel is None:
      return [(self.kpt_uv[:, 0], self.kpt_uv[:, 1], np.ones(NUM_LANDMARKS, np.float32))]
    return list(zip(*(np.moveaxis(a, 1, 0) for a in bilinear(self.kpt_uv_subpixel,
                                                               self.resolution))))

  def taps(self) -> tuple[np.ndarray, np.ndarray]:
    """How `landmarks` reads each landmark: (68, T) flat pixel indices and (68, T) weights."""
    if self.kpt_taps is not None:
      return self.kpt_taps, self.kpt_tap_weights
    u, v, w = (np.stack(a, 1) for a in zip(*self.bilinear_taps()))
    return (v * self.resolution + u).astype(np.int32), w.astype(np.float32)

  def vertices(self, pos):
    """(..., R, R, 3) position maps -> (..., N, 3) dense face vertices."""
    flat = pos.reshape(pos.shape[:-3] + (-1, pos.shape[-1]))
    return flat[..., self.face_indices, :]

  def save(self, directory: str) -> None:
    """Writes the assets in the official file formats (readable by `load_uv_assets`)."""
    from PIL import Image
    os.makedirs(directory, exist_ok=True)
    np.savetxt(os.path.join(directory, 'uv_kpt_ind.txt'), self.kpt_uv.T.astype(np.float64))
    subpixel = os.path.join(directory, 'uv_kpt_subpixel.txt')
    if self.kpt_uv_subpixel is not None:
      np.savetxt(subpixel, self.kpt_uv_subpixel.T.astype(np.float64))
    elif os.path.exists(subpixel):
      os.remove(subpixel)
    taps = os.path.join(directory, 'uv_kpt_taps.txt')
    if self.kpt_taps is not None:
      np.savetxt(taps, np.concatenate([self.kpt_taps.astype(np.float64),
                                       self.kpt_tap_weights.astype(np.float64)], 1))
    elif os.path.exists(taps):
      os.remove(taps)
    np.savetxt(os.path.join(directory, 'face_ind.txt'), self.face_indices.astype(np.float64))
    Image.fromarray((self.face_mask > 0).astype(np.uint8) * 255).save(
        os.path.join(directory, 'uv_face_mask.png'))
    png = np.clip(np.round(self.weight_mask / WEIGHT_PNG_SCALE), 0, 255).astype(np.uint8)
    Image.fromarray(png).save(os.path.join(directory, 'uv_weight_mask.png'))
    np.save(os.path.join(directory, 'canonical_vertices.npy'),
            self.canonical_vertices.astype(np.float64))
    np.savetxt(os.path.join(directory, 'triangles.txt'), self.triangles, fmt='%d')


def read_taps(pos, taps: np.ndarray, weights: np.ndarray):
  """(..., R, R, C) maps -> (..., 68, C): each landmark the weighted sum of its (68, T) flat
  pixel taps (NumPy or JAX arrays)."""
  flat = pos.reshape(pos.shape[:-3] + (-1, pos.shape[-1]))
  return (flat[..., taps, :] * weights[:, :, None].astype(pos.dtype)).sum(-2)


def bilinear(points: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The bilinear taps of (P, 2) (u, v) map positions in [0, R-1]: u (P, 4), v (P, 4) int32 and
  weights (P, 4) float32 (a position on a pixel centre gets that pixel at weight 1)."""
  k = np.asarray(points, np.float64)
  lo = np.minimum(np.floor(k).astype(np.int32), resolution - 2)
  f = k - lo
  u = np.stack([lo[:, 0] + du for dv in (0, 1) for du in (0, 1)], 1)
  v = np.stack([lo[:, 1] + dv for dv in (0, 1) for du in (0, 1)], 1)
  w = np.stack([(f[:, 0] if du else 1 - f[:, 0]) * (f[:, 1] if dv else 1 - f[:, 1])
                for dv in (0, 1) for du in (0, 1)], 1)
  return u.astype(np.int32), v.astype(np.int32), w.astype(np.float32)


def grid_triangles(face_mask: np.ndarray) -> np.ndarray:
  """(T, 3) int32 triangles over the face pixels: two per 2x2 pixel cell fully inside the mask.

  Vertex k is the k-th face pixel in row-major order (the order of `face_ind.txt`).
  """
  inside = np.asarray(face_mask) > 0
  r, c = inside.shape
  vid = np.full(inside.shape, -1, np.int64)
  vid[inside] = np.arange(inside.sum())
  tl, tr, bl, br = vid[:-1, :-1], vid[:-1, 1:], vid[1:, :-1], vid[1:, 1:]
  full = (tl >= 0) & (tr >= 0) & (bl >= 0) & (br >= 0)
  upper = np.stack([tl[full], bl[full], tr[full]], -1)
  lower = np.stack([tr[full], bl[full], br[full]], -1)
  return np.concatenate([upper, lower], 0).astype(np.int32)


def _path(directory: str, name: str) -> str:
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    raise AssetError(f'{path}: missing UV asset file (expected the official uv-data folder '
                     f'with {", ".join(FILES)})')
  return path


def _read_png(path: str) -> np.ndarray:
  from PIL import Image
  try:
    with Image.open(path) as im:
      a = np.asarray(im)
  except Exception as e:  # PIL raises several unrelated types for corrupt files.
    raise AssetError(f'{path}: cannot read image ({e})') from e
  if a.ndim == 3:  # Tolerate RGB(A) copies of the gray masks.
    a = a[..., 0]
  if a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise AssetError(f'{path}: expected a square gray image, got shape {a.shape}')
  return a


def _read_txt(path: str) -> np.ndarray:
  try:
    return np.loadtxt(path, ndmin=1)
  except ValueError as e:
    raise AssetError(f'{path}: not a numeric text table ({e})') from e


def load_uv_assets(directory: str) -> UVAssets:
  """Loads the official PRNet `uv-data` folder (or one written by `UVAssets.save`)."""
  face_mask_png = _read_png(_path(directory, 'uv_face_mask.png'))
  weight_png = _read_png(_path(directory, 'uv_weight_mask.png'))
  r = face_mask_png.shape[0]
  if weight_png.shape != (r, r):
    raise AssetError(f'{os.path.join(directory, "uv_weight_mask.png")}: shape '
                     f'{weight_png.shape} differs from uv_face_mask.png {(r, r)}')

  kpt_path = _path(directory, 'uv_kpt_ind.txt')
  kpt = _read_txt(kpt_path)
  if kpt.shape != (2, NUM_LANDMARKS):
    raise AssetError(f'{kpt_path}: expected 2x{NUM_LANDMARKS} (u, v) values, got {kpt.shape}')
  kpt_uv = kpt.T.astype(np.int32)
  if kpt_uv.min() < 0 or kpt_uv.max() >= r:
    raise AssetError(f'{kpt_path}: landmark positions outside the {r}x{r} UV map')

  sub_path = os.path.join(directory, 'uv_kpt_subpixel.txt')
  subpixel = None
  if os.path.isfile(sub_path):
    sub = _read_txt(sub_path)
    if sub.shape != (2, NUM_LANDMARKS):
      raise AssetError(f'{sub_path}: expected 2x{NUM_LANDMARKS} (u, v) values, got {sub.shape}')
    subpixel = sub.T.astype(np.float32)

  taps_path = os.path.join(directory, 'uv_kpt_taps.txt')
  taps = tap_weights = None
  if os.path.isfile(taps_path):
    t = _read_txt(taps_path)
    if t.ndim != 2 or t.shape[0] != NUM_LANDMARKS or t.shape[1] % 2:
      raise AssetError(f'{taps_path}: expected {NUM_LANDMARKS} rows of T pixel indices and T '
                       f'weights, got shape {t.shape}')
    taps, tap_weights = t[:, :t.shape[1] // 2].astype(np.int32), t[:, t.shape[1] // 2:]
    tap_weights = tap_weights.astype(np.float32)

  ind_path = _path(directory, 'face_ind.txt')
  face_indices = _read_txt(ind_path).astype(np.int64)
  mask_indices = np.flatnonzero(face_mask_png.reshape(-1) > 0)
  if not np.array_equal(face_indices, mask_indices):
    raise AssetError(f'{ind_path}: {len(face_indices)} indices do not equal the '
                     f'{len(mask_indices)} nonzero pixels of uv_face_mask.png')

  cv_path = _path(directory, 'canonical_vertices.npy')
  try:
    canonical = np.load(cv_path)
  except Exception as e:
    raise AssetError(f'{cv_path}: cannot read .npy ({e})') from e

  tri_path = os.path.join(directory, 'triangles.txt')
  face_mask = (face_mask_png > 0).astype(np.float32)
  if os.path.isfile(tri_path):
    triangles = _read_txt(tri_path).astype(np.int32).reshape(-1, 3)
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(face_indices)):
      raise AssetError(f'{tri_path}: triangle indices outside [0, {len(face_indices)})')
  else:
    triangles = grid_triangles(face_mask)

  try:
    return UVAssets(kpt_uv=kpt_uv, face_indices=face_indices.astype(np.int32),
                    face_mask=face_mask,
                    weight_mask=weight_png.astype(np.float32) * np.float32(WEIGHT_PNG_SCALE),
                    canonical_vertices=canonical.astype(np.float32), triangles=triangles,
                    kpt_uv_subpixel=subpixel, kpt_taps=taps, kpt_tap_weights=tap_weights)
  except AssetError as e:
    raise AssetError(f'{directory}: {e}') from e

