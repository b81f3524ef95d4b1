"""Per-device memory of the accelerator configs' train step, from XLA's memory analysis of the
compiled step (nothing is run), and the per-device batch that fits a 16, 80 and 141 GB device.

  PRNET_JAX_NATIVE=0 python benchmarks/memory_estimate.py [--config=gpu] [--batches=16,64,128,256]

Compiles `train.make_trainer(config)`'s step for one device at each per-device batch, in the
config's dtype (bfloat16 for 'gpu'/'tpu') and in float32, on the default backend, and reports
arguments (state + batch), temporaries and their sum (outputs alias the donated state). The
temporaries grow linearly with the batch; the fitted line gives the largest batch under 90% of
each device size (JAX's GPU client takes 75% by default: XLA_PYTHON_CLIENT_MEM_FRACTION=0.9).

On a CPU-only machine this is XLA:CPU's buffer assignment, an estimate of a GPU's or TPU's:
XLA:CPU computes many bfloat16 ops in float32 and fuses differently, so its bfloat16
temporaries are an upper bound; `benchmarks/roofline.py` on the device reports its own.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'configs'))
import jax  # noqa: E402
import numpy as np  # noqa: E402
import prnet as config_module  # noqa: E402

from benchmarks.common import report  # noqa: E402
from prnet_jax.faces.face_model import derive_uv_assets  # noqa: E402
from prnet_jax.faces.procedural_face import procedural_face_model  # noqa: E402
from prnet_jax.training import train  # noqa: E402

DEVICE_GB = (16, 80, 141)
USABLE = 0.9


def step_memory(config, batch: int) -> dict:
  """XLA's accounting of one device's compiled train step at `batch` images (bytes)."""
  config.batch_size = batch
  res = config.model.resolution
  if jax.device_count() != 1:
    raise SystemExit('run it with one device (e.g. CUDA_VISIBLE_DEVICES=0): the estimate is '
                     'per device')
  trainer = train.make_trainer(config, 100, derive_uv_assets(procedural_face_model(), res))
  images = jax.ShapeDtypeStruct((batch, res, res, 3), np.uint8, sharding=trainer.data_sharding)
  maps = jax.ShapeDtypeStruct((batch, res, res, 3), np.float32, sharding=trainer.data_sharding)
  compiled = trainer.step.lower(trainer.abstract_state,
                                {'image': images, 'position_map': maps}).compile()
  m = compiled.memory_analysis()
  return {'arguments': m.argument_size_in_bytes, 'temporaries': m.temp_size_in_bytes,
          'outputs_not_aliased': m.output_size_in_bytes - m.alias_size_in_bytes}


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='gpu', help='variant of configs/prnet.py')
  p.add_argument('--batches', default='16,64,128,256', help='per-device batches to compile')
  p.add_argument('--dtypes', default='', help="default: the config's dtype and float32")
  p.add_argument('--output', default='benchmarks/results/memory_estimate.json')
  a = p.parse_args()
  batches = [int(b) for b in a.batches.split(',')]
  base = config_module.get_config(a.config)
  dtypes = a.dtypes.split(',') if a.dtypes else sorted({base.model.dtype, 'float32'})
  rows = []
  for dtype in dtypes:
    points = []
    for b in batches:
      c = config_module.get_config(a.config)
      c.model.dtype = dtype
      mem = step_memory(c, b)
      total = mem['arguments'] + mem['temporaries'] + mem['outputs_not_aliased']
      points.append((b, total))
      rows.append({'dtype': dtype, 'batch_per_device': b, 'arguments_gb': mem['arguments'] / 1e9,
                   'temporaries_gb': mem['temporaries'] / 1e9, 'total_gb': total / 1e9,
                   'mb_per_image': mem['temporaries'] / b / 1e6})
      print(rows[-1], flush=True)
    slope, intercept = np.polyfit([b for b, _ in points], [t for _, t in points], 1)
    for gb in DEVICE_GB:
      rows.append({'dtype': dtype, 'batch_per_device': int((USABLE * gb * 1e9 - intercept) // slope),
                   'arguments_gb': '-', 'temporaries_gb': '-',
                   'total_gb': f'fits {gb} GB ({USABLE:.0%})', 'mb_per_image': slope / 1e6})
  report('memory_estimate', rows, ['dtype', 'batch_per_device', 'arguments_gb', 'temporaries_gb',
                                   'total_gb', 'mb_per_image'], a.output)


if __name__ == '__main__':
  main()
