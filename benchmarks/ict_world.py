"""Images per second of the ICT face world: its parts, one process, and the dataset build.

  python benchmarks/ict_world.py [--num=128] [--output=benchmarks/results/ict_world.json]

Rows:
* rasterise: the 48k-triangle head into 256 x 256 (native rasteriser, batched; and the JAX
  rasteriser with a window plan, for comparison);
* shade: rasterise + per-pixel materials and lights (`ict_render.render_heads`), batched;
* sample_batch: whole samples in one process (geometry, materials, background, render,
  occluders, camera effects, position map), batches of `--batch`;
* build: `synthetic_faces`' ICT config built into array_record files with all cores
  (`--num` train samples), what a training run's data costs.
Times are medians after a warm-up (compilation excluded); the build is timed once, end to end.
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import median, report, time_calls  # noqa: E402
from prnet_jax import runtime
from prnet_jax.geometry import render
from prnet_jax.worlds import ict_render  # noqa: E402
from prnet_jax.worlds.ict_world import FACTORS, ICTWorld  # noqa: E402


def main():
  runtime.restart_tuned()
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--num', type=int, default=128, help='train samples of the timed build')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--output', default='benchmarks/results/ict_world.json')
  a = p.parse_args()
  world = ICTWorld()
  b, size = a.batch, world.image_size
  rows = []

  def row(what, seconds_per_batch, n):
    rows.append({'what': what, 'batch': n, 'ms_per_image': 1e3 * seconds_per_batch / n,
                 'images_per_s': n / seconds_per_batch})

  draws = []
  for seed in range(b):
    rngs = {f: np.random.default_rng([seed, i]) for i, f in enumerate(FACTORS)}
    person = world._person(rngs['appearance'], rngs['lighting'])  # pylint: disable=protected-access
    g = world._geometry(rngs, person[-1])  # pylint: disable=protected-access
    draws.append((g[4], g[5]) + person[:2])
  heads, normals, channels, params = (np.stack([d[k] for d in draws]) for k in range(4))
  tri = world._render_triangles  # pylint: disable=protected-access
  if render.native_available():
    fn = jax.jit(lambda v: render.rasterize_auto(v, tri, size, size))
    fn(heads)
    row('rasterise (native)', median(time_calls(lambda: jax.block_until_ready(fn(heads)),
                                                a.repeats)), b)
  windows = render.plan_windows(heads, np.asarray(tri))
  fx = jax.jit(jax.vmap(lambda v: render.rasterize(v, tri, size, size, windows)))
  fx(heads)
  row(f'rasterise (JAX, {windows})', median(time_calls(
      lambda: jax.block_until_ready(fx(heads)), a.repeats)), b)
  bg = np.zeros((b, size, size, 3), np.float32)
  native = render.native_available()

  def shade():
    return jax.block_until_ready(ict_render.render_heads(
        heads, tri, world._rest, normals, channels, params, bg, size, native,  # pylint: disable=protected-access
        None if native else windows))
  shade()
  row('rasterise + shade', median(time_calls(shade, a.repeats)), b)
  world.sample_batch(range(b))
  seeds = iter(range(1000, 10 ** 6, b))
  row('sample_batch (whole samples, 1 process)', median(time_calls(
      lambda: world.sample_batch(range(s := next(seeds), s + b)), a.repeats)), b)

  from datasets import synthetic_faces
  with tempfile.TemporaryDirectory() as tmp:
    config = dataclasses.replace(synthetic_faces.SyntheticFaces.builder_configs['ict'],
                                 name='bench', num_train=a.num, num_test=8)
    builder = synthetic_faces.SyntheticFaces(config=config, data_dir=tmp,
                                             file_format='array_record')
    t = time.perf_counter()
    builder.download_and_prepare(file_format='array_record')
    dt = time.perf_counter() - t
  rows.append({'what': f'build synthetic_faces/ict ({os.cpu_count()} workers, incl. start-up)',
               'batch': a.num, 'ms_per_image': 1e3 * dt / a.num, 'images_per_s': a.num / dt})
  report('ict_world', rows, ['what', 'batch', 'ms_per_image', 'images_per_s'], a.output)


if __name__ == '__main__':
  main()
