"""Input pipeline throughput (read + decode + batch + on-device augmentation) against what the
full model's train step consumes.

  python benchmarks/input_pipeline.py [--num=256] [--workers=1,2] [--output=...]

Builds (once) a `synthetic_faces` config of --num 256x256 examples in --data_dir, then measures
images/s of: one core's record work in this process (array_record read + JPEG + position map)
for the position-map formats (PM1 zlib, PM2 zstd byte planes, PM3 zigzag planes) decoded on the host or left to the
device (`posmap_residuals`); the grain loader for each worker count; the same plus the device's
share (position-map sums, jitted augmentation); and a full-model train step (batch 16, forward
+ backward + Adam) for the consumption side.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import report  # noqa: E402
from prnet_jax.data import augment, input_pipeline, posmap_codec
from prnet_jax.nn import losses  # noqa: E402
from prnet_jax.nn.model import PRNet, init_variables  # noqa: E402

from datasets import synthetic_faces  # noqa: E402


def images_per_s(next_batch, batch_size, n_batches):
  next_batch()  # warm-up (compiles, starts workers)
  t = time.perf_counter()
  for _ in range(n_batches):
    next_batch()
  return batch_size * n_batches / (time.perf_counter() - t)


def one_core_rows(source, n):
  """images/s of read + decode of n records in this process, per position-map format/mode
  (the records hold PM3; the older formats are re-encoded from them beforehand)."""
  older = {fmt: [posmap_codec.encode(posmap_codec.decode(source[i]['position_map']), fmt)
                 for i in range(n)] for fmt in ('PM1', 'PM2')}
  rows = []
  for fmt, name, residuals in (('PM1', 'PM1 (zlib)', False), ('PM2', 'PM2 (zstd planes)', False),
                               ('PM3', 'PM3 (zstd zigzag planes)', False),
                               ('PM2', 'PM2 (zstd planes)', True),
                               ('PM3', 'PM3 (zstd zigzag planes)', True)):
    decode = input_pipeline.DecodeExample(256, posmap_residuals=residuals)

    def work(i):
      rec = source[i % n]
      if fmt in older:
        rec = dict(rec, position_map=older[fmt][i % n])
      decode.map(rec)
    work(0)
    t = time.perf_counter()
    for i in range(4 * n):
      work(i)
    rows.append({'stage': f'read + decode, one core: {name}, maps '
                          f'{"summed on device" if residuals else "on host"}',
                 'workers': 0, 'images_per_s': 4 * n / (time.perf_counter() - t)})
  return rows


def train_step_rate(batch_size, steps):
  model = PRNet()
  variables = jax.jit(lambda k: init_variables(model, k))(jax.random.key(0))
  tx = optax.adam(1e-4)
  opt = tx.init(variables['params'])
  weights = jnp.ones((256, 256))

  @jax.jit
  def step(params, stats, opt, x, y):
    def loss_fn(p):
      out, upd = model.apply({'params': p, 'batch_stats': stats}, x, train=True,
                             mutable=['batch_stats'])
      return losses.position_map_loss(out, y, weights, model.max_pos), upd
    (loss, upd), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), upd['batch_stats'], opt, loss

  x = jnp.zeros((batch_size, 256, 256, 3))
  y = jnp.zeros((batch_size, 256, 256, 3))
  state = [variables['params'], variables['batch_stats'], opt]

  def run():
    state[0], state[1], state[2], loss = step(*state, x, y)
    loss.block_until_ready()
  return images_per_s(run, batch_size, steps)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--num', type=int, default=256)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--batches', type=int, default=12)
  p.add_argument('--workers', default='1,2')
  p.add_argument('--train_steps', type=int, default=3)
  p.add_argument('--data_dir', default='/tmp/prnet_bench_tfds')
  p.add_argument('--output', default='benchmarks/results/input_pipeline.json')
  a = p.parse_args()
  config = synthetic_faces.SyntheticFacesConfig(name=f'bench{a.num}', image_size=256,
                                                num_train=a.num, num_test=1)
  builder = synthetic_faces.SyntheticFaces(config=config, data_dir=a.data_dir,
                                           file_format='array_record')
  builder.download_and_prepare(file_format='array_record')
  source = builder.as_data_source(split='train')
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()), ('d',)),
                                        jax.sharding.PartitionSpec('d'))
  aug = jax.jit(lambda k, b: augment.augment_batch(
      k, b['image'].astype(jnp.float32) / 255.0, b['position_map'], augment.AugmentConfig()))
  rows = one_core_rows(source, min(a.num, 64))
  for workers in [int(w) for w in a.workers.split(',')]:
    loader = input_pipeline.train_loader(source, a.batch, 0, 256, worker_count=workers,
                                         posmap_residuals=True)
    it = iter(loader)
    rows.append({'stage': 'grain loader: read + decode (maps summed on device) + batch',
                 'workers': workers,
                 'images_per_s': images_per_s(lambda: next(it), a.batch, a.batches)})
    dev = input_pipeline.DeviceIterator(input_pipeline.train_loader(
        source, a.batch, 0, 256, worker_count=workers, posmap_residuals=True), sharding)
    key = [jax.random.key(0)]

    def load_and_augment():
      key[0], k = jax.random.split(key[0])
      jax.block_until_ready(aug(k, next(dev)))
    rows.append({'stage': '... + device: map sums + augmentation (jit)', 'workers': workers,
                 'images_per_s': images_per_s(load_and_augment, a.batch, a.batches)})
    dev.close()
  rows.append({'stage': f'full-model train step (batch {a.batch})', 'workers': '-',
               'images_per_s': train_step_rate(a.batch, a.train_steps)})
  consume = rows[-1]['images_per_s']
  for r in rows:
    r['x_train_step'] = r['images_per_s'] / consume
  report('input_pipeline', rows, ['stage', 'workers', 'images_per_s', 'x_train_step'],
         a.output)


if __name__ == '__main__':
  main()
