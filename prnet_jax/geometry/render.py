"""Triangle rasterisation in JAX: position maps in UV space, images with a z-buffer.

Conventions (those of face3d, the authors' data tool):

* pixel (row i, column j) has its centre at (x, y) = (j, i): integer coordinates;
* a pixel is covered by a triangle when its centre lies inside or on the triangle (all
  barycentric coordinates >= -1e-5, i.e. edges included up to float32 rounding); degenerate
  (zero-area) triangles cover nothing;
* depth: a **larger z is nearer** the viewer; among equally near triangles the higher index wins.

The rasteriser is a pure, jittable, vmappable function of arrays. Every triangle tests the pixel
centres of a fixed window anchored at the top-left of its bounding box; the window sides are
static: one side for all (`required_bbox`) or, cheaper, a big window for the few largest
triangles and a small one for the rest (`plan_windows`, computed on the host; the convenience
wrappers do so when no plan is given). Coverage, the z-buffer and the owner of each
pixel come from three scatters (max-depth, then max-index among the nearest), and barycentrics
are recomputed per pixel for its owner, so the result does not depend on scatter order.

In UV space the mesh never changes between samples, only the values interpolated on it do:
`UVRenderer` rasterises the UV layout once and renders each position map as a gather + weighted
sum (three vertices per pixel), which is what makes ground-truth generation fast.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

_DEGENERATE_EPS = 1e-10
# Pixel centres on an edge count as covered; this absorbs float32 rounding of the barycentrics.
_EDGE_EPS = 1e-5


class Raster(NamedTuple):
  """Per-pixel result of rasterisation.

  triangle: (H, W) int32 index of the covering (nearest) triangle, -1 where none.
  bary: (H, W, 3) float32 barycentric weights of that triangle's vertices (0 where none).
  depth: (H, W) float32 interpolated z of the nearest surface, -inf where none.
  """
  triangle: jax.Array
  bary: jax.Array
  depth: jax.Array

  @property
  def mask(self) -> jax.Array:
    return self.triangle >= 0


def _barycentric(p, a, b, c):
  """Barycentric coordinates of points p (..., 2) in triangles (a, b, c) (..., 2 each).

  Returns (w (..., 3), twice the signed area (...)). Degenerate triangles give w = -1."""
  d = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (c[..., 0] - a[..., 0]) * (
      b[..., 1] - a[..., 1])
  ok = jnp.abs(d) > _DEGENERATE_EPS
  safe = jnp.where(ok, d, 1.0)
  w1 = ((p[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1])
        - (c[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1])) / safe
  w2 = ((b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1])
        - (p[..., 0] - a[..., 0]) * (b[..., 1] - a[..., 1])) / safe
  w = jnp.stack([1.0 - w1 - w2, w1, w2], -1)
  return jnp.where(ok[..., None], w, -1.0), d


class Windows(NamedTuple):
  """Static pixel windows: the `num_big` largest triangles test `big` x `big` pixel centres,
  all others `small` x `small` (see `plan_windows`)."""
  small: int
  big: int = 0
  num_big: int = 0


# Pixel centres a z-buffer of predicted meshes may test per output pixel (`plan_windows_within`):
# a smooth face mesh needs a few; an untrained network's scattered mesh would need thousands.
# Memory is then bounded by the image size whatever the network outputs.
BUDGET_PER_PIXEL = 32
WINDOW_SIDES = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
NUM_BIG = (0, 64, 256, 1024, 4096, 16384)


def _needed(xy):
  """Window side each triangle needs: pixel centres from ceil(min) to floor(max), inclusive."""
  return (jnp.floor(xy.max(-2)) - jnp.ceil(xy.min(-2))).max(-1) + 1


def triangle_windows(vertices, triangles) -> np.ndarray:
  """(..., T) int window side each triangle needs (host, same float32 arithmetic as the jit)."""
  xy = np.asarray(vertices, np.float32)[..., np.asarray(triangles), :2]
  need = (np.floor(xy.max(-2)) - np.ceil(xy.min(-2))).max(-1) + 1
  return np.maximum(need, 1).astype(np.int64)


def required_bbox(vertices, triangles) -> int:
  """Smallest single window side that covers every triangle (host). vertices: (..., V, 2+)."""
  need = triangle_windows(vertices, triangles)
  return int(need.max()) if need.size else 1


def _cheapest_plan(ranked: np.ndarray) -> tuple[int, Windows]:
  """(cost in tested pixel centres, Windows) of the cheapest two-tier plan for window needs
  `ranked` (items, T), each row sorted descending."""
  num_tri = ranked.shape[1]
  if not num_tri:
    return 0, Windows(1)
  big = next(k for k in WINDOW_SIDES if k >= ranked[:, 0].max())
  best = (num_tri * big ** 2, Windows(big))
  for nb in NUM_BIG:
    if nb >= num_tri:
      break
    rest = ranked[:, nb].max()
    small = next(k for k in WINDOW_SIDES if k >= rest)
    cost = (num_tri - nb) * small ** 2 + nb * big ** 2
    if cost < best[0]:
      best = (cost, Windows(small, big if nb else 0, nb))
  return best


def plan_windows(vertices, triangles) -> Windows:
  """The cheapest two-tier `Windows` (from fixed buckets, so few compilations) covering every
  triangle of `vertices` (..., V, 2+); batched vertices get one plan valid for every item."""
  need = triangle_windows(vertices, triangles).reshape(-1, len(triangles))
  return _cheapest_plan(-np.sort(-need, axis=1))[1]


def plan_windows_within(vertices, triangles, max_candidates: int
                        ) -> tuple[Windows, np.ndarray]:
  """`plan_windows` under a memory budget: (windows, triangles), where the largest triangles
  (by window side) are replaced by a degenerate one, which is never drawn, until the plan tests
  at most `max_candidates` pixel centres (memory grows with that count).

  A smooth mesh keeps every triangle; a mesh of huge, scattered triangles (e.g. an untrained
  network's position map) is drawn without its largest ones instead of asking for memory in
  proportion to their areas. Shapes stay fixed, so nothing recompiles. vertices: (V, 2+)."""
  triangles = np.asarray(triangles)
  need = triangle_windows(vertices, triangles)
  order = np.argsort(-need, kind='stable')
  ranked = need[order][None]
  cost, windows = _cheapest_plan(ranked)
  if cost <= max_candidates:
    return windows, triangles
  lo, hi = 1, len(triangles)  # drop the `hi` largest: 1 x 1 windows for all, within budget
  while lo < hi:
    mid = (lo + hi) // 2
    kept = np.concatenate([ranked[:, mid:], np.ones((1, mid), need.dtype)], 1)
    if _cheapest_plan(kept)[0] <= max_candidates:
      hi = mid
    else:
      lo = mid + 1
  kept = np.concatenate([ranked[:, lo:], np.ones((1, lo), need.dtype)], 1)
  out = triangles.copy()
  out[order[:lo]] = triangles[0, 0]  # degenerate: all three corners one vertex
  return _cheapest_plan(kept)[1], out


def _candidates(xy, z, tids, k, height, width):
  """Pixel-centre candidates of triangles xy (n, 3, 2) in k x k windows.

  Returns flat pixel index (n*k*k,; out-of-image -> H*W), depth (-inf where not covered),
  triangle index."""
  n = xy.shape[0]
  lo = jnp.ceil(xy.min(1))  # (n, 2) first pixel centre of the bounding box
  hi = jnp.floor(xy.max(1))
  off = jnp.arange(k, dtype=jnp.float32)
  px, py = jnp.broadcast_arrays(lo[:, None, None, 0] + off[None, None, :],
                                lo[:, None, None, 1] + off[None, :, None])  # (n, k, k)
  p = jnp.stack([px, py], -1).reshape(n, k * k, 2)
  w, _ = _barycentric(p, xy[:, None, 0], xy[:, None, 1], xy[:, None, 2])  # (n, k*k, 3)
  valid = (jnp.all(w >= -_EDGE_EPS, -1)
           & (p[..., 0] <= hi[:, None, 0]) & (p[..., 1] <= hi[:, None, 1])
           & (p[..., 0] >= 0) & (p[..., 0] <= width - 1)
           & (p[..., 1] >= 0) & (p[..., 1] <= height - 1))
  flat = jnp.where(valid, p[..., 1].astype(jnp.int32) * width + p[..., 0].astype(jnp.int32),
                   height * width)  # out-of-range index: dropped by the scatters
  zq = jnp.where(valid, jnp.einsum('tkv,tv->tk', w, z), -jnp.inf)
  return (flat.reshape(-1), zq.reshape(-1),
          jnp.broadcast_to(tids[:, None], valid.shape).reshape(-1))


@functools.partial(jax.jit, static_argnames=('height', 'width', 'bbox'))
def rasterize(vertices: jax.Array, triangles: jax.Array, height: int, width: int,
              bbox: int | Windows) -> Raster:
  """Rasterises a triangle mesh with a z-buffer.

  Args:
    vertices: (V, 3) float, x (column), y (row) in pixels, z depth (larger is nearer).
      Pass z = 0 for a flat layout (UV space).
    triangles: (T, 3) int vertex indices.
    height, width: output size.
    bbox: static window side for every triangle (`required_bbox`), or a two-tier `Windows`
      (`plan_windows`), which is much cheaper when a few triangles are large.

  Returns:
    Raster with (H, W) fields.
  """
  windows = bbox if isinstance(bbox, Windows) else Windows(int(bbox))
  vertices = jnp.asarray(vertices, jnp.float32)
  triangles = jnp.asarray(triangles, jnp.int32)
  num_tri = triangles.shape[0]
  tri = vertices[triangles]  # (T, 3, 3)
  xy, z = tri[..., :2], tri[..., 2]
  tids = jnp.arange(num_tri, dtype=jnp.int32)
  if windows.num_big:
    order = jnp.argsort(-_needed(xy))  # the largest triangles get the big window
    groups = [(order[:windows.num_big], windows.big), (order[windows.num_big:], windows.small)]
  else:
    groups = [(tids, windows.small)]
  parts = [_candidates(xy[ids], z[ids], ids, k, height, width) for ids, k in groups]
  flat, zq, tid = (jnp.concatenate(x) for x in zip(*parts))
  n_pix = height * width
  zbuf = jnp.full((n_pix,), -jnp.inf, jnp.float32).at[flat].max(zq, mode='drop')
  nearest = (zq > -jnp.inf) & (zq >= zbuf.at[flat].get(mode='fill', fill_value=jnp.inf))
  owner = jnp.full((n_pix,), -1, jnp.int32).at[flat].max(jnp.where(nearest, tid, -1),
                                                         mode='drop')
  owner = owner.reshape(height, width)
  # Recompute barycentrics per pixel for its owner (exactly as the candidate computed them).
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing='ij')
  ot = xy[jnp.maximum(owner, 0)]  # (H, W, 3, 2)
  wpix, _ = _barycentric(jnp.stack([xs, ys], -1), ot[..., 0, :], ot[..., 1, :], ot[..., 2, :])
  covered = owner >= 0
  bary = jnp.where(covered[..., None], wpix, 0.0)
  depth = jnp.where(covered, zbuf.reshape(height, width), -jnp.inf)
  return Raster(owner, bary, depth)


def native_available() -> bool:
  """Whether `rasterize_auto` uses the native rasteriser (CPU backend, library built)."""
  from prnet_jax import native
  return jax.default_backend() == 'cpu' and native.available()


def rasterize_auto(vertices, triangles, height: int, width: int) -> Raster:
  """`rasterize` without a window plan: the native rasteriser where `native_available()` (then
  traceable, and batched over leading dimensions of vertices (..., V, 3)), else `plan_windows`
  on the host and `rasterize` (vmapped over leading dimensions; not traceable). Both give the
  same coverage and owners up to float32 rounding of barycentrics on edges."""
  if native_available():
    from prnet_jax import native
    return Raster(*native.rasterize(vertices, triangles, height, width))
  vertices = np.asarray(vertices, np.float32)
  windows = plan_windows(vertices, triangles)
  fn = functools.partial(rasterize, triangles=jnp.asarray(triangles, jnp.int32), height=height,
                         width=width, bbox=windows)
  for _ in range(vertices.ndim - 2):
    fn = jax.vmap(fn)
  return fn(vertices)


@jax.jit
def interpolate(raster: Raster, triangles: jax.Array, attributes: jax.Array,
                background: float = 0.0) -> jax.Array:
  """(V, C) per-vertex attributes -> (H, W, C) barycentric interpolation over `raster`."""
  ids = jnp.asarray(triangles, jnp.int32)[jnp.maximum(raster.triangle, 0)]  # (H, W, 3)
  attributes = jnp.asarray(attributes)
  # Three row gathers and a weighted sum: ~4x faster on XLA:CPU than a (H, W, 3, C) gather
  # and an einsum (benchmarks/render_position_map.py measures the same for UV maps).
  values = sum(raster.bary[..., k:k + 1] * jnp.take(attributes, ids[..., k], axis=0)
               for k in range(3))
  return jnp.where(raster.mask[..., None], values, background)


def render(vertices, triangles, attributes, height: int, width: int,
           bbox: Optional[int | Windows] = None, background: float = 0.0):
  """Renders per-vertex attributes into an image with a z-buffer.

  Returns (image (H, W, C), raster). Computes `bbox` on the host when not given (so then the
  call cannot be traced; pass `bbox` under jit/vmap)."""
  if bbox is None:
    bbox = plan_windows(np.asarray(vertices), np.asarray(triangles))
  raster = rasterize(vertices, triangles, height, width, bbox)
  return interpolate(raster, triangles, attributes, background), raster


def vertex_visibility(vertices: jax.Array, raster: Raster, tolerance: float = 1.0) -> jax.Array:
  """(V,) bool: a vertex is visible when it projects into the image and its z is within
  `tolerance` of the z-buffer at its nearest pixel."""
  x = jnp.round(vertices[:, 0]).astype(jnp.int32)
  y = jnp.round(vertices[:, 1]).astype(jnp.int32)
  h, w = raster.depth.shape
  inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
  d = raster.depth[jnp.clip(y, 0, h - 1), jnp.clip(x, 0, w - 1)]
  return inside & (vertices[:, 2] >= d - tolerance)


@dataclasses.dataclass(frozen=True)
class UVRenderer:
  """Renders per-vertex values into UV space through a fixed, precomputed raster.

  Attributes:
    vertex_ids: (R, R, 3) int32 mesh vertices contributing to each UV pixel.
    weights: (R, R, 3) float32 their barycentric weights (all 0 outside the mesh).
  """
  vertex_ids: jax.Array
  weights: jax.Array

  @classmethod
  def create(cls, uv_pixels: np.ndarray, triangles: np.ndarray, resolution: int
             ) -> 'UVRenderer':
    """uv_pixels: (V, 2) UV positions in pixels (x = column, y = row), triangles (T, 3)."""
    uv = np.concatenate([np.asarray(uv_pixels, np.float32)[:, :2],
                         np.zeros((len(uv_pixels), 1), np.float32)], 1)
    raster = rasterize(uv, triangles, resolution, resolution, plan_windows(uv, triangles))
    ids = jnp.asarray(triangles, jnp.int32)[jnp.maximum(raster.triangle, 0)]
    return cls(vertex_ids=ids, weights=raster.bary)

  @property
  def mask(self) -> jax.Array:
    return jnp.any(self.weights != 0, -1)

  def __call__(self, values: jax.Array) -> jax.Array:
    """(..., V, C) per-vertex values -> (..., R, R, C) UV map (0 outside the mesh). Jitted,
    also when called eagerly (dataset builders call it per sample: 8 ms eagerly, 0.3 ms
    jitted for a BFM-size mesh)."""
    return _render_uv(self, jnp.asarray(values))


jax.tree_util.register_dataclass(UVRenderer, data_fields=['vertex_ids', 'weights'],
                                 meta_fields=[])


@jax.jit
def _render_uv(renderer: UVRenderer, values: jax.Array) -> jax.Array:
  lead, (v, c) = values.shape[:-2], values.shape[-2:]
  r = renderer.vertex_ids.shape[0]
  # Vertices first, (batch x channels) contiguous: three row gathers and a weighted sum,
  # which XLA:CPU runs ~3x faster than one gather + einsum (benchmarks/render_position_map).
  table = jnp.moveaxis(values.reshape((-1, v, c)), 1, 0).reshape(v, -1)
  ids = renderer.vertex_ids.reshape(-1, 3)
  w = renderer.weights.reshape(-1, 3)
  out = sum(w[:, k:k + 1] * jnp.take(table, ids[:, k], axis=0) for k in range(3))
  out = jnp.moveaxis(out.reshape(r, r, -1, c), 2, 0)
  return out.reshape(lead + (r, r, c))


@jax.jit
def vertex_normals(vertices: jax.Array, triangles: jax.Array) -> jax.Array:
  """(V, 3) area-weighted unit vertex normals of a mesh (vertices (V, 3), triangles (T, 3))."""
  tri = vertices[triangles]
  n = jnp.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  acc = jnp.zeros_like(vertices)
  for k in range(3):
    acc = acc.at[triangles[:, k]].add(n)
  return acc / jnp.maximum(jnp.linalg.norm(acc, axis=-1, keepdims=True), 1e-12)
