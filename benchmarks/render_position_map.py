"""Position-map rendering of a BFM-size mesh, and z-buffered image rendering of the same mesh.

  python benchmarks/render_position_map.py [--output=benchmarks/results/render.json]

Mesh: a 231 x 231 vertex grid = 53,361 vertices and 105,800 triangles (the size of the mesh in
ANCHORS.md's face3d measurement), UV = the grid, 3D shape = a bumpy hemisphere.
* UV plan: `UVRenderer.create` (rasterise the UV layout once; reused by every sample).
* position map: render (V, 3) positions through the plan, batch 1 and batched (vmap).
* image: rasterise the posed mesh into 256 x 256 with a z-buffer and interpolate colours (the
  JAX rasteriser with its window plan, and the native one where it builds).
Times are medians of --repeats calls after a warm-up; compile time is reported separately.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import median, report, time_calls  # noqa: E402
from prnet_jax.geometry import render  # noqa: E402

ANCHOR_FACE3D_UV_MS = 4.7     # ANCHORS.md: face3d render_colors, same mesh size, this CPU kind
ANCHOR_FACE3D_IMAGE_MS = 1.7


def grid_mesh(n=231, size=256):
  u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
  idx = np.arange(n * n).reshape(n, n)
  a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
  tri = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                        np.stack([a, c, d], -1).reshape(-1, 3)]).astype(np.int32)
  uv_px = np.stack([u.ravel(), v.ravel()], 1) * (size - 1)
  x, y = (u.ravel() - 0.5) * 2, (v.ravel() - 0.5) * 2
  z = np.sqrt(np.clip(1.2 - x ** 2 - y ** 2, 0, None)) + 0.05 * np.sin(9 * x) * np.cos(7 * y)
  positions = (np.stack([x, y, z], 1) * 0.45 * size + [size / 2, size / 2, 0]).astype(np.float32)
  return uv_px.astype(np.float32), tri, positions


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--repeats', type=int, default=20)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--output', default='benchmarks/results/render.json')
  a = p.parse_args()
  uv_px, tri, positions = grid_mesh()
  rows = []

  t = time.perf_counter()
  renderer = render.UVRenderer.create(uv_px, tri, 256)
  jax.block_until_ready(renderer.weights)
  rows.append({'what': 'UV plan (once per face model)', 'batch': 1,
               'ms_per_map': 1e3 * (time.perf_counter() - t), 'compile_s': float('nan'),
               'x_vs_face3d': float('nan')})

  one = jax.jit(lambda r, p: r(p))
  pos = jnp.asarray(positions)
  t = time.perf_counter()
  one(renderer, pos).block_until_ready()
  c = time.perf_counter() - t
  ms = 1e3 * median(time_calls(lambda: one(renderer, pos).block_until_ready(), a.repeats))
  rows.append({'what': 'position map', 'batch': 1, 'ms_per_map': ms, 'compile_s': c,
               'x_vs_face3d': ANCHOR_FACE3D_UV_MS / ms})

  batch = jnp.asarray(positions[None] + np.random.RandomState(0).normal(
      0, 1, (a.batch, 1, 3)).astype(np.float32))
  t = time.perf_counter()
  one(renderer, batch).block_until_ready()
  c = time.perf_counter() - t
  ms = 1e3 * median(time_calls(lambda: one(renderer, batch).block_until_ready(),
                               max(3, a.repeats // 4))) / a.batch
  rows.append({'what': 'position map', 'batch': a.batch, 'ms_per_map': ms, 'compile_s': c,
               'x_vs_face3d': ANCHOR_FACE3D_UV_MS / ms})

  bbox = render.required_bbox(positions, tri)
  colours = jnp.asarray(np.random.RandomState(1).uniform(0, 1, (len(positions), 3)),
                        jnp.float32)
  image = jax.jit(lambda p: render.interpolate(render.rasterize(p, tri, 256, 256, bbox), tri,
                                               colours))
  t = time.perf_counter()
  image(pos).block_until_ready()
  c = time.perf_counter() - t
  ms = 1e3 * median(time_calls(lambda: image(pos).block_until_ready(), a.repeats))
  rows.append({'what': f'z-buffer image (bbox {bbox})', 'batch': 1, 'ms_per_map': ms,
               'compile_s': c, 'x_vs_face3d': ANCHOR_FACE3D_IMAGE_MS / ms})
  if render.native_available():
    native = jax.jit(lambda p: render.interpolate(render.rasterize_auto(p, tri, 256, 256), tri,
                                                  colours))
    t = time.perf_counter()
    native(pos).block_until_ready()
    c = time.perf_counter() - t
    ms = 1e3 * median(time_calls(lambda: native(pos).block_until_ready(), a.repeats))
    rows.append({'what': 'z-buffer image (native rasteriser)', 'batch': 1, 'ms_per_map': ms,
                 'compile_s': c, 'x_vs_face3d': ANCHOR_FACE3D_IMAGE_MS / ms})
  report('render_position_map', rows, ['what', 'batch', 'ms_per_map', 'compile_s',
                                       'x_vs_face3d'], a.output)


if __name__ == '__main__':
  main()
