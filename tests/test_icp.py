"""Alignment: Umeyama with known correspondences, exact nearest neighbours, ICP."""

import numpy as np
import pytest

from prnet_jax.faces.procedural_face import procedural_face_model
from prnet_jax.geometry import icp


@pytest.fixture(scope='module')
def surface():
  """8,000 random points on the embedded face's surface (mm): scan-like, not a grid."""
  m = procedural_face_model()
  tri = m.triangles[(m.regions[m.triangles] > 0).all(1)]
  rng = np.random.default_rng(0)
  b = rng.dirichlet([1, 1, 1], 8000)
  ids = rng.integers(0, len(tri), 8000)
  return np.einsum('nk,nkc->nc', b, m.mean[tri[ids]]).astype(np.float32)


def test_umeyama_recovers_any_similarity_exactly(surface):
  rng = np.random.default_rng(1)
  for _ in range(5):
    r, s, t = icp.random_rotation(rng), rng.uniform(0.5, 2), rng.normal(0, 50, 3)
    dst = s * surface[:500].astype(np.float64) @ r.T + t
    fit = icp.umeyama(surface[:500], dst.astype(np.float32))
    np.testing.assert_allclose(fit.rotation, r, atol=1e-5)
    assert float(fit.scale) == pytest.approx(s, rel=1e-5)
    np.testing.assert_allclose(fit.translation, t, atol=5e-3)
    rigid = icp.umeyama(surface[:500], (surface[:500] @ r.T + t).astype(np.float32),
                        with_scale=False)
    assert float(rigid.scale) == 1.0
    np.testing.assert_allclose(rigid.rotation, r, atol=1e-5)


def test_umeyama_never_returns_a_reflection(surface):
  mirrored = surface[:300] * np.array([-1, 1, 1], np.float32)
  fit = icp.umeyama(surface[:300], mirrored)
  assert np.linalg.det(np.asarray(fit.rotation)) == pytest.approx(1.0, abs=1e-5)


def test_nearest_neighbours_match_brute_force_float64():
  rng = np.random.default_rng(2)
  q = rng.uniform(-100, 100, (777, 3)).astype(np.float32)
  p = rng.uniform(-100, 100, (1500, 3)).astype(np.float32)
  idx, dist = icp.nearest_neighbors(q, p, chunk=256)
  d = np.linalg.norm(q[:, None].astype(np.float64) - p[None].astype(np.float64), axis=-1)
  np.testing.assert_array_equal(idx, d.argmin(1))
  np.testing.assert_allclose(dist, d.min(1), rtol=1e-5)


@pytest.mark.parametrize('with_scale', [False, True])
def test_icp_recovers_a_known_random_transform(surface, with_scale):
  """src is a quarter of the scan moved by a random transform (rotation 10..20 deg about a
  random axis, 20 mm translation, scale 0.8..1.25 if enabled); ICP from the centroids finds it."""
  for seed in range(3):
    rng = np.random.default_rng(seed)
    r, t = icp.random_rotation(rng, np.deg2rad(20), np.deg2rad(10)), rng.normal(0, 20, 3)
    s = rng.uniform(0.8, 1.25) if with_scale else 1.0
    c = surface.mean(0)
    # src = the inverse transform of the points: s * src @ r.T + t == surface
    src = (((surface - t) @ r) / s).astype(np.float32)[::4]
    fit = icp.icp(src, surface, iterations=60, with_scale=with_scale)
    np.testing.assert_allclose(fit.transform.rotation, r, atol=1e-4)
    assert float(fit.transform.scale) == pytest.approx(s, rel=1e-4)
    moved = np.asarray(fit.transform.apply(src))
    assert np.abs(moved - surface[::4]).max() < 1e-2  # mm, on a 20 cm face
    assert float(fit.rms[int(fit.iterations) - 1]) < 1e-2
    start = src + (c - src.mean(0))  # where ICP starts: far from the answer
    assert np.abs(start - surface[::4]).max() > 5.0


def test_trimmed_icp_ignores_outliers(surface):
  rng = np.random.default_rng(5)
  r, t = icp.random_rotation(rng, np.deg2rad(10)), rng.normal(0, 10, 3)
  src = ((surface - t) @ r).astype(np.float32)[::4]
  src[:100] += rng.normal(0, 40, (100, 3)).astype(np.float32)  # 5% gross outliers
  plain = icp.icp(src, surface, iterations=60, with_scale=False)
  trimmed = icp.icp(src, surface, iterations=60, with_scale=False, trim=0.1)
  err = lambda f: np.abs(np.asarray(f.transform.rotation) - r).max()
  assert err(trimmed) < 1e-3 < err(plain)


def test_rigid_icp_from_a_20_degree_start_converges_and_stops(surface):
  """Stops on convergence (an update moves no point by more than tol), well before the cap,
  with the rotation recovered to a few hundredths of a degree."""
  rng = np.random.default_rng(11)
  r, t = icp.random_rotation(rng, np.deg2rad(20), np.deg2rad(20)), rng.normal(0, 5, 3)
  src = ((surface - t) @ r).astype(np.float32)[::4]
  init = icp.Similarity(np.float32(1), np.eye(3, dtype=np.float32),
                        (surface.mean(0) - src.mean(0)).astype(np.float32))
  fit = icp.icp(src, surface, init, iterations=300, with_scale=False, tol=1e-4)
  done = int(fit.iterations)
  assert 1 < done < 300
  assert np.all(np.isfinite(np.asarray(fit.rms[:done])))
  assert np.all(np.isnan(np.asarray(fit.rms[done:])))
  cos = (np.trace(np.asarray(fit.transform.rotation).T @ r) - 1) / 2
  assert np.rad2deg(np.arccos(np.clip(cos, -1, 1))) < 0.05
