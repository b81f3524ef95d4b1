"""The JAX rasteriser against a brute-force per-pixel float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prnet_jax.geometry import render

EDGE_TOL = 1e-6


def brute_force(vertices, triangles, attributes, h, w):
  """Per pixel, every triangle: coverage (bary >= 0), nearest z (ties: higher index), values.

  Returns (owner (H, W) with -1 for none, values (H, W, C), on_edge (H, W) bool)."""
  v = np.asarray(vertices, np.float64)
  t = np.asarray(triangles)
  ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  p = np.stack([xs, ys], -1).reshape(-1, 1, 2).astype(np.float64)  # (P, 1, 2)
  a, b, c = (v[t[:, k], None, :2].transpose(1, 0, 2) for k in range(3))  # (1, T, 2)
  d = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (c[..., 0] - a[..., 0]) * (
      b[..., 1] - a[..., 1])
  nondeg = np.abs(d) > 1e-10
  d = np.where(nondeg, d, 1.0)
  w1 = ((p[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1])
        - (c[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1])) / d
  w2 = ((b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1])
        - (p[..., 0] - a[..., 0]) * (b[..., 1] - a[..., 1])) / d
  bary = np.stack([1 - w1 - w2, w1, w2], -1)  # (P, T, 3)
  inside = np.all(bary >= 0, -1) & nondeg
  near_edge = np.any(np.abs(bary) < EDGE_TOL, -1) & np.all(bary >= -EDGE_TOL, -1) & nondeg
  z = np.einsum('ptk,tk->pt', bary, v[t, 2])
  zm = np.where(inside, z, -np.inf)
  best = zm.max(1, keepdims=True)
  cand = inside & (zm == best)
  owner = np.where(cand.any(1), (np.arange(len(t))[None] * cand - (~cand)).max(1), -1)
  ob = bary[np.arange(len(p)), np.maximum(owner, 0)]  # (P, 3)
  vals = np.einsum('pk,pkc->pc', ob, np.asarray(attributes, np.float64)[t[np.maximum(owner, 0)]])
  vals[owner < 0] = 0
  # Also treat as 'edge' pixels whose nearest depth is tied within float32 noise between
  # different triangles (the choice there depends on rounding).
  with np.errstate(invalid='ignore'):
    close = inside & (np.abs(zm - best) < 1e-4 * (1 + np.abs(best)))
  ambiguous = close.sum(1) > 1
  edge = near_edge.any(1) | ambiguous
  return owner.reshape(h, w), vals.reshape(h, w, -1), edge.reshape(h, w)


def random_mesh(seed, n_vert=40, n_tri=60, size=32, degenerate=True):
  rng = np.random.RandomState(seed)
  v = np.concatenate([rng.uniform(-4, size + 4, (n_vert, 2)), rng.uniform(-10, 10, (n_vert, 1))],
                     1)
  tri = np.stack([rng.choice(n_vert, 3, replace=False) for _ in range(n_tri)])
  if degenerate:
    # a zero-area sliver (collinear points) and a triangle with a repeated vertex
    v = np.concatenate([v, [[3, 3, 50], [10, 10, 50], [17, 17, 50]]])
    tri = np.concatenate([tri, [[n_vert, n_vert + 1, n_vert + 2], [0, 0, 1]]])
  attrs = rng.uniform(-1, 1, (len(v), 4))
  return v.astype(np.float32), tri.astype(np.int32), attrs.astype(np.float32)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_matches_brute_force_reference(seed):
  v, tri, attrs = random_mesh(seed)
  h, w = 32, 36
  image, raster = render.render(v, tri, attrs, h, w)
  owner, ref_vals, edge = brute_force(v, tri, attrs, h, w)
  got_owner = np.asarray(raster.triangle)
  assert (owner >= 0).sum() > 200  # the test covers many pixels
  differ = (got_owner != owner) & ~edge
  assert not differ.any(), np.argwhere(differ)[:5]
  same = (got_owner == owner) & (owner >= 0)
  assert np.abs(np.asarray(image)[same] - ref_vals[same]).max() < 1e-4
  assert np.all(np.asarray(image)[owner < 0] == 0)
  # Depth buffer = interpolated z of the owner.
  zref = np.einsum('hwk,hwk->hw', np.asarray(raster.bary, np.float64), v[tri[np.maximum(got_owner, 0)], 2])
  np.testing.assert_allclose(np.asarray(raster.depth)[same], zref[same], atol=1e-4)


def test_degenerate_triangles_cover_nothing():
  v = np.array([[0, 0, 0], [10, 10, 0], [20, 20, 0], [5, 1, 0]], np.float32)
  raster = render.rasterize(v, np.array([[0, 1, 2], [0, 0, 3], [3, 3, 3]]), 24, 24, 21)
  assert not np.asarray(raster.mask).any()


def test_known_geometry_square_and_occlusion():
  # A square 2..9 split in two triangles (far, z=0) and a near triangle over part of it.
  v = np.array([[2, 2, 0], [9, 2, 0], [2, 9, 0], [9, 9, 0],
                [0, 0, 5], [6, 0, 5], [0, 6, 5]], np.float32)
  tri = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6]])
  colour = np.array([[1.0]] * 4 + [[2.0]] * 3, np.float32)
  image, raster = render.render(v, tri, colour, 12, 12)
  image = np.asarray(image)[..., 0]
  square = np.zeros((12, 12), bool)
  square[2:10, 2:10] = True
  near = np.zeros((12, 12), bool)
  ys, xs = np.mgrid[:12, :12]
  near[(xs + ys <= 6)] = True
  np.testing.assert_array_equal(np.asarray(raster.mask), square | near)
  np.testing.assert_allclose(image[near], 2.0, rtol=1e-6)  # the near triangle occludes
  np.testing.assert_allclose(image[square & ~near], 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(raster.depth)[near], 5.0, rtol=1e-6)


def test_jit_and_vmap_over_a_batch_equal_single_renders():
  v, tri, attrs = random_mesh(3, degenerate=False)
  batch_v = np.stack([v, v + np.array([1.5, -2.0, 0.3], np.float32)])
  batch_a = np.stack([attrs, attrs[::-1]])
  bbox = render.required_bbox(batch_v, tri)

  @jax.jit
  @jax.vmap
  def many(vv, aa):
    return render.interpolate(render.rasterize(vv, tri, 32, 32, bbox), tri, aa)

  out = np.asarray(many(batch_v, batch_a))
  for i in range(2):
    single, _ = render.render(batch_v[i], tri, batch_a[i], 32, 32)
    np.testing.assert_array_equal(out[i], np.asarray(single))


def test_uv_renderer_equals_full_rasterisation_and_batches():
  rng = np.random.RandomState(0)
  # A regular grid of UV vertices (like a face layout), random per-vertex values.
  n = 9
  gu, gv = np.meshgrid(np.linspace(3, 28, n), np.linspace(2, 29, n))
  uv = np.stack([gu.ravel(), gv.ravel()], 1).astype(np.float32)
  idx = np.arange(n * n).reshape(n, n)
  tri = np.concatenate([np.stack([idx[:-1, :-1], idx[1:, :-1], idx[:-1, 1:]], -1).reshape(-1, 3),
                        np.stack([idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]], -1).reshape(-1, 3)])
  values = rng.uniform(0, 255, (2, n * n, 3)).astype(np.float32)
  renderer = render.UVRenderer.create(uv, tri, 32)
  maps = np.asarray(jax.jit(renderer.__call__)(values))
  assert maps.shape == (2, 32, 32, 3)
  for i in range(2):
    owner, ref_vals, edge = brute_force(np.concatenate([uv, np.zeros((n * n, 1))], 1), tri,
                                        values[i], 32, 32)
    covered = owner >= 0
    mask = np.asarray(renderer.mask)
    np.testing.assert_array_equal(mask[~edge], covered[~edge])
    both = covered & mask
    assert both.sum() > 600
    np.testing.assert_allclose(maps[i][both], ref_vals[both], atol=1e-3, rtol=1e-6)
  assert np.all(maps[:, ~np.asarray(renderer.mask)] == 0)


def test_vertex_visibility():
  v = np.array([[2, 2, 0], [9, 2, 0], [2, 9, 0], [4, 4, -5], [20, 20, 0]], np.float32)
  tri = np.array([[0, 1, 2]])
  _, raster = render.render(v, tri, np.zeros((5, 1), np.float32), 12, 12)
  vis = np.asarray(render.vertex_visibility(jnp.asarray(v), raster))
  # corners visible; a point behind the triangle hidden; a point outside the image hidden
  np.testing.assert_array_equal(vis, [True, True, True, False, False])


def small_and_large_triangles(seed, num_small, num_large, spread):
  """`num_small` triangles of ~3 px in a 64 px image, then `num_large` with corners anywhere in
  [-spread, 64 + spread]: (vertices (3T, 3) float32, triangles (T, 3))."""
  rng = np.random.RandomState(seed)
  centres = rng.uniform(0, 64, (num_small, 1, 2))
  small = centres + rng.uniform(-1.5, 1.5, (num_small, 3, 2))
  large = rng.uniform(-spread, 64 + spread, (num_large, 3, 2))
  xy = np.concatenate([small, large]).reshape(-1, 2)
  v = np.concatenate([xy, rng.uniform(-5, 5, (len(xy), 1))], 1).astype(np.float32)
  return v, np.arange(len(v)).reshape(-1, 3)


def test_two_tier_windows_equal_one_window():
  # Many small triangles and a few large ones: the plan uses a big window for the large.
  v, tri = small_and_large_triangles(5, 300, 6, 10)
  plan = render.plan_windows(v, tri)
  assert plan.num_big > 0 and plan.small <= 4 and plan.big >= render.required_bbox(v, tri)
  a = render.rasterize(v, tri, 64, 64, plan)
  b = render.rasterize(v, tri, 64, 64, render.required_bbox(v, tri))
  np.testing.assert_array_equal(np.asarray(a.triangle), np.asarray(b.triangle))
  np.testing.assert_array_equal(np.asarray(a.bary), np.asarray(b.bary))
  # A plan that is too small for the data misses pixels: the test can fail.
  c = render.rasterize(v, tri, 64, 64, render.Windows(plan.small))
  assert (np.asarray(c.triangle) != np.asarray(b.triangle)).any()


def plan_cost(w: render.Windows, num_tri: int) -> int:
  return (num_tri - w.num_big) * w.small ** 2 + w.num_big * w.big ** 2


def test_a_budget_drops_only_the_largest_triangles():
  # 1000 small triangles and 40 huge ones (an untrained network's mesh has thousands).
  v, tri = small_and_large_triangles(7, 1000, 40, 20)
  need = render.triangle_windows(v, tri)
  # A budget the plan already fits: the same plan, every triangle kept.
  free = plan_cost(render.plan_windows(v, tri), len(tri))
  w, kept = render.plan_windows_within(v, tri, free)
  assert w == render.plan_windows(v, tri) and np.array_equal(kept, tri)
  # A tight budget: within it, and only the largest triangles dropped (made degenerate).
  budget = 16 * 64 * 64
  assert free > budget
  w, kept = render.plan_windows_within(v, tri, budget)
  assert plan_cost(w, len(tri)) <= budget
  dropped = np.flatnonzero((kept != tri).any(1))
  assert 0 < len(dropped) <= 40 and need[dropped].min() >= need[np.setdiff1d(
      np.arange(len(tri)), dropped)].max()
  assert np.all(kept[dropped] == kept[dropped][:, :1])  # degenerate: one vertex thrice
  r = render.rasterize(v, kept, 64, 64, w)
  owners = np.unique(np.asarray(r.triangle))
  assert not set(owners.tolist()) & set(dropped.tolist())  # dropped ones draw nothing
  # Every small triangle keeps its pixels: the full raster's owners among the small ones.
  full = render.rasterize(v, tri, 64, 64, render.required_bbox(v, tri))
  small_only = render.rasterize(v[:3000], tri[:1000], 64, 64, render.required_bbox(v, tri[:1000]))
  mine = np.asarray(r.triangle)
  np.testing.assert_array_equal(mine[mine < 1000], np.asarray(small_only.triangle)[mine < 1000])
  assert (np.asarray(full.triangle) >= 1000).any()  # the huge ones did cover pixels


def test_native_rasteriser_matches_the_jax_rasteriser():
  """Random overlapping triangles with ties: the native rasteriser gives the JAX rasteriser's
  owners, barycentrics and depths (including the higher index winning equal depths)."""
  if not render.native_available():
    pytest.skip('no native rasteriser here (no C++ compiler)')
  rng = np.random.default_rng(0)
  v = np.concatenate([rng.uniform(-8, 72, (300, 2)), rng.uniform(0, 4, (300, 1))], 1)
  v = v.astype(np.float32)
  tri = rng.integers(0, 300, (400, 3)).astype(np.int32)
  tri[200:] = tri[:200]  # duplicates: equal depths, the higher index must win
  a = render.rasterize(v, tri, 64, 64, render.plan_windows(v, tri))
  b = render.rasterize_auto(v, tri, 64, 64)
  owner_a, owner_b = np.asarray(a.triangle), np.asarray(b.triangle)
  assert np.mean(owner_a == owner_b) > 0.999
  assert owner_b.max() >= 200 and not np.any((owner_b >= 0) & (owner_b < 200))
  same = owner_a == owner_b
  np.testing.assert_allclose(np.asarray(a.bary)[same], np.asarray(b.bary)[same], atol=1e-5)
  np.testing.assert_allclose(np.asarray(a.depth)[same & (owner_a >= 0)],
                             np.asarray(b.depth)[same & (owner_a >= 0)], atol=1e-4)
  # Batched over leading dimensions, each item as if alone.
  vb = np.stack([v, v[::-1].copy()])
  batch = render.rasterize_auto(vb, tri, 64, 64)
  np.testing.assert_array_equal(np.asarray(batch.triangle[0]), owner_b)
