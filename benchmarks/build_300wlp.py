"""300W-LP build throughput per core, and the projected time for all 122,450 samples.

  python benchmarks/build_300wlp.py [--samples=24] [--cores=32] [--output=...]

Writes (once, in --work_dir) a BFM-shaped model in the raw layout face3d's generate.m reads
(`tests/fixtures.write_raw_bfm_fixture`: a 231x231 procedural face, 53,361 vertices and
~106k triangles like the trimmed BFM's 53,215 / 105,840, 199 shape and 29 expression
components) and --samples 300W-LP-format files (450x450 JPEG + .mat with Pose_Para,
Shape_Para, Exp_Para, pt2d). Then, in this one process: the BFM's load (from the raw
downloads through the generate.m port, and from the BFM.mat it writes) and the builder's
per-sample work (`datasets.prnet_300wlp.process_sample`: .mat and JPEG reads, the 3DMM
mesh, crop, UV rendering, crop warp, position-map and JPEG encoding).
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tests'))
from benchmarks.common import report  # noqa: E402

TOTAL_300WLP = 122_450


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--samples', type=int, default=24)
  p.add_argument('--cores', type=int, default=32)
  p.add_argument('--work_dir', default='/tmp/prnet_bench_300wlp')
  p.add_argument('--output', default='benchmarks/results/build_300wlp.json')
  a = p.parse_args()
  import fixtures  # tests/fixtures.py
  from datasets import prnet_300wlp
  from prnet_jax.faces import bfm_generate, face_model

  raw_dir = os.path.join(a.work_dir, 'BFM_raw')
  out_dir = os.path.join(a.work_dir, 'BFM')
  if not os.path.isfile(os.path.join(out_dir, 'BFM.mat')):
    print('writing a BFM-shaped raw model ...', flush=True)
    fixtures.write_raw_bfm_fixture(raw_dir, nu=231, nv=231, n_shape=199, n_exp=29)
    bfm_generate.write(raw_dir, out_dir)
  folder = os.path.join(a.work_dir, '300W_LP', 'AFW')
  rng = np.random.default_rng(0)
  items = []
  for i in range(a.samples):
    name = f'AFW_{i}_0'
    if not os.path.isfile(os.path.join(folder, name + '.mat')):
      fixtures.write_300wlp_sample(folder, name, rng, n_shape=199, n_exp=29,
                                   Shape_Para=rng.normal(0, 0.05, (199, 1)),
                                   Exp_Para=rng.normal(0, 0.05, (29, 1)))
    items.append((os.path.join(folder, name + '.jpg'), os.path.join(folder, name + '.mat'),
                  f'AFW/{name}'))

  rows = []
  t = time.perf_counter()
  model = face_model.load_bfm_folder(raw_dir)
  rows.append({'stage': 'BFM from the raw downloads (generate.m port), once per worker',
               'seconds': time.perf_counter() - t, 'samples_per_s_per_core': '-'})
  t = time.perf_counter()
  face_model.load_bfm_folder(out_dir)
  rows.append({'stage': 'BFM from BFM.mat, once per worker', 'seconds': time.perf_counter() - t,
               'samples_per_s_per_core': '-'})
  print(f'model: {model.num_vertices} vertices, {len(model.triangles)} triangles', flush=True)
  prnet_300wlp._init_bfm(out_dir)
  first = prnet_300wlp.process_sample(items[0])  # compiles the renderer
  if not isinstance(first, tuple):
    raise SystemExit(f'the sample failed: {first}')
  t = time.perf_counter()
  for item in items[1:]:
    result = prnet_300wlp.process_sample(item)
    if not isinstance(result, tuple):
      raise SystemExit(f'a sample failed: {result}')
  per_core = (len(items) - 1) / (time.perf_counter() - t)
  rows.append({'stage': 'per sample (read, mesh, crop, UV render, warp, encode)',
               'seconds': 1 / per_core, 'samples_per_s_per_core': per_core})
  hours = TOTAL_300WLP / (per_core * a.cores) / 3600
  rows.append({'stage': f'all {TOTAL_300WLP} samples on {a.cores} cores (projected)',
               'seconds': hours * 3600, 'samples_per_s_per_core': per_core})
  report('build_300wlp', rows, ['stage', 'seconds', 'samples_per_s_per_core'], a.output)


if __name__ == '__main__':
  main()
