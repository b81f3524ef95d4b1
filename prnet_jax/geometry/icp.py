"""Rigid (optionally scaled) point-cloud alignment in JAX: Umeyama/Kabsch and ICP.

    s, r, t = umeyama(src, dst)                 # known correspondences: dst ~ s * src @ r.T + t
    fit = icp(src, dst, init=(s, r, t))        # unknown ones: nearest neighbours, iterated

Nearest neighbours are brute force in chunks (exact; O(N M) on the accelerator, no tree), with
squared distances expanded as |q|^2 - 2 q.p + |p|^2 at HIGHEST matmul precision and the chosen
neighbour's distance recomputed directly so the result is exact to float32.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np


class Similarity(NamedTuple):
  """x -> scale * x @ rotation.T + translation."""
  scale: jax.Array        # ()
  rotation: jax.Array     # (3, 3), det +1
  translation: jax.Array  # (3,)

  def apply(self, points: jax.Array) -> jax.Array:
    return self.scale * points @ self.rotation.T + self.translation


def umeyama(src: jax.Array, dst: jax.Array, weights: Optional[jax.Array] = None,
            with_scale: bool = True) -> Similarity:
  """Least-squares similarity (Umeyama 1991; Kabsch without scale) mapping src onto dst.

  src, dst: (N, 3) corresponding points; weights: (N,) >= 0. Reflections are excluded."""
  src = jnp.asarray(src, jnp.float32)
  dst = jnp.asarray(dst, jnp.float32)
  w = jnp.ones(src.shape[0], src.dtype) if weights is None else jnp.asarray(weights, src.dtype)
  w = w / jnp.maximum(w.sum(), 1e-12)
  mu_s, mu_d = w @ src, w @ dst
  xs, xd = src - mu_s, dst - mu_d
  cov = (xd * w[:, None]).T @ xs  # (3, 3) = sum w dst src^T
  u, sig, vt = jnp.linalg.svd(cov)
  d = jnp.sign(jnp.linalg.det(u) * jnp.linalg.det(vt))
  d = jnp.where(d == 0, 1.0, d)
  e = jnp.array([1.0, 1.0, 0.0], src.dtype) + jnp.array([0.0, 0.0, 1.0], src.dtype) * d
  r = (u * e) @ vt
  if with_scale:
    var_s = (w * (xs ** 2).sum(-1)).sum()
    s = (sig * e).sum() / jnp.maximum(var_s, 1e-12)
  else:
    s = jnp.asarray(1.0, src.dtype)
  return Similarity(s, r, mu_d - s * mu_s @ r.T)


@functools.partial(jax.jit, static_argnames=('chunk',))
def nearest_neighbors(query: jax.Array, points: jax.Array, chunk: int = 1024
                      ) -> tuple[jax.Array, jax.Array]:
  """(Q, 3), (P, 3) -> (index (Q,) int32 of the nearest point, its distance (Q,))."""
  q_n = query.shape[0]
  pad = (-q_n) % chunk
  qp = jnp.pad(query, ((0, pad), (0, 0))).reshape(-1, chunk, 3)
  p_sq = (points ** 2).sum(-1)

  def one(qc):
    d2 = (qc ** 2).sum(-1)[:, None] - 2 * jnp.matmul(qc, points.T,
                                                     precision=jax.lax.Precision.HIGHEST) + p_sq
    idx = jnp.argmin(d2, axis=1).astype(jnp.int32)
    return idx, jnp.linalg.norm(qc - points[idx], axis=-1)

  idx, dist = jax.lax.map(one, qp)
  return idx.reshape(-1)[:q_n], dist.reshape(-1)[:q_n]


class ICPResult(NamedTuple):
  transform: Similarity  # maps src onto dst
  rms: jax.Array         # (iterations,) RMS neighbour distance before each update; NaN after
                         # the last update made
  iterations: jax.Array  # () int32: updates made (fewer than `iterations` once converged)


@functools.partial(jax.jit, static_argnames=('iterations', 'with_scale', 'trim', 'chunk'))
def icp(src: jax.Array, dst: jax.Array, init: Optional[Similarity] = None,
        iterations: int = 30, with_scale: bool = True, trim: float = 0.0,
        chunk: int = 1024, tol: float = 0.0) -> ICPResult:
  """Iterative closest point: aligns the cloud `src` (N, 3) to `dst` (M, 3).

  Each iteration pairs every transformed src point with its nearest dst point, drops the
  `trim` fraction of the farthest pairs (0: keep all), and re-solves the similarity (rotation +
  translation, + scale if `with_scale`) from the original src points, starting from `init`
  (default: centroids aligned). It stops after `iterations` updates, or once an update moves no
  src point by more than `tol` (dst units; converged). Like any ICP it finds the nearest local
  optimum: start it within some degrees of the answer."""
  src = jnp.asarray(src, jnp.float32)
  dst = jnp.asarray(dst, jnp.float32)
  if init is None:  # centroids aligned
    init = Similarity(jnp.float32(1), jnp.eye(3, dtype=jnp.float32),
                      dst.mean(0) - src.mean(0))
  init = Similarity(*(jnp.asarray(x, jnp.float32) for x in init))

  def body(carry):
    k, tf, rms, _ = carry
    moved = tf.apply(src)
    idx, dist = nearest_neighbors(moved, dst, chunk)
    keep = dist <= jnp.quantile(dist, 1.0 - trim) if trim > 0 else jnp.ones_like(dist)
    new = umeyama(src, dst[idx], keep.astype(src.dtype), with_scale)
    step = jnp.abs(new.apply(src) - moved).max()
    return k + 1, new, rms.at[k].set(jnp.sqrt((dist ** 2).mean())), step

  def more(carry):
    k, _, _, step = carry
    return (k < iterations) & (step > tol)

  start = (jnp.int32(0), init, jnp.full((iterations,), jnp.nan, jnp.float32),
           jnp.float32(jnp.inf))
  k, tf, rms, _ = jax.lax.while_loop(more, body, start)
  return ICPResult(tf, rms, k)


def random_rotation(rng: np.random.Generator, max_angle: float = np.pi,
                    min_angle: float = 0.0) -> np.ndarray:
  """A random rotation (3, 3) about a random axis by an angle in [min_angle, max_angle]."""
  axis = rng.normal(size=3)
  axis /= np.linalg.norm(axis)
  a = rng.uniform(min_angle, max_angle)
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
