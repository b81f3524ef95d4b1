"""The native CPU convolution kernels against XLA's, per PRNet layer shape (batch 16, float32).

  python benchmarks/native_kernels.py            # every stride-1 convolution shape of PRNet
  python benchmarks/native_kernels.py --small    # a quick subset at batch 2 (tested in CI)

For each shape: the kernel gradient (native vs XLA's autodiff of the padded convolution) and
the forward pass where a native forward kernel exists (vs ``lax.conv_general_dilated``),
milliseconds (median), GFLOP/s, the speed-up, and whether ``conv_ops`` uses the native kernel
for that shape (``native.use_for`` / ``native.forward_kind``), so the dispatch rules can be
checked against measurements on a new machine.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import jax  # noqa: E402
from jax import lax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import median, report, time_calls  # noqa: E402
from prnet_jax import (
  native,  # noqa: E402
  runtime,  # noqa: E402  (XLA:CPU settings: runtime.restart_tuned)
)

SAME = ((1, 2), (1, 2))         # TF SAME, 4x4, stride 1
TRANSPOSED = ((2, 1), (2, 1))   # stride-1 transposed conv as a conv
PHASES = ((1, 1), (1, 1))       # stride-2 transposed conv as a 2x2 conv
VALID = ((0, 0), (0, 0))        # stride-2 conv as space-to-depth + 2x2 conv
# (input side, Cin, Cout, kernel side, padding): PRNet's stride-1 convolutions after conv_ops'
# rewrites, from the first conv to the output layers.
SHAPES = [
    (256, 3, 16, 4, SAME), (129, 64, 16, 2, VALID), (128, 16, 16, 4, SAME),
    (65, 128, 32, 2, VALID), (64, 32, 32, 4, SAME), (33, 256, 64, 2, VALID),
    (32, 64, 64, 4, SAME), (17, 512, 128, 2, VALID), (16, 128, 128, 4, SAME),
    (8, 256, 256, 4, SAME),
    (32, 128, 128, 4, TRANSPOSED), (64, 64, 64, 4, TRANSPOSED), (64, 64, 128, 2, PHASES),
    (128, 32, 32, 4, TRANSPOSED), (128, 32, 64, 2, PHASES), (256, 16, 16, 4, TRANSPOSED),
    (256, 16, 3, 4, TRANSPOSED), (256, 3, 3, 4, TRANSPOSED)]
SMALL_SHAPES = [(64, 3, 16, 4, SAME), (32, 16, 16, 4, TRANSPOSED), (32, 16, 3, 4, TRANSPOSED),
                (33, 64, 16, 2, VALID)]
DN = ('NHWC', 'HWIO', 'NHWC')


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--small', action='store_true', help='a quick subset at batch 2')
  p.add_argument('--output', default='benchmarks/results/native_kernels.json')
  a = p.parse_args()
  shapes, batch = (SMALL_SHAPES, 2) if a.small else (SHAPES, a.batch)
  lanes = native.load()  # fails loudly here if the library cannot be built
  rows = []
  rng = np.random.RandomState(0)
  for side, ci, co, k, pad in shapes:
    x = jnp.asarray(rng.randn(batch, side, side, ci), jnp.float32)
    kernel = jnp.asarray(rng.randn(k, k, ci, co), jnp.float32)
    ho = side + sum(pad[0]) - k + 1
    wo = side + sum(pad[1]) - k + 1
    dy = jnp.asarray(rng.randn(batch, ho, wo, co), jnp.float32)
    gflop = 2 * batch * ho * wo * k * k * ci * co / 1e9
    ops = {}
    if ci % lanes == 0 or co % lanes == 0:  # what the kernel-gradient kernel is written for
      ops['kernel_grad'] = (
          jax.jit(lambda x, dy, pad=pad, k=k: native.conv_kernel_grad(x, dy, (k, k), pad)),
          jax.jit(lambda x, dy, pad=pad, k=k: native.xla_conv_kernel_grad(x, dy, (k, k), pad)),
          (x, dy), native.use_for(x, kernel.shape, batch * ho * wo))
    # The forward kernel written for this shape, if any; conv_ops may still prefer XLA's.
    fwd_kind = ('small_co' if co <= 4 else
                'few_ci' if ci < lanes and co % lanes == 0 else None)
    if fwd_kind:
      ops['forward'] = (
          jax.jit(lambda x, w, pad=pad, kd=fwd_kind: native.conv_forward(x, w, pad, kd)),
          jax.jit(lambda x, w, pad=pad: lax.conv_general_dilated(x, w, (1, 1), pad,
                                                                  dimension_numbers=DN)),
          (x, kernel), native.forward_kind(x, kernel.shape) is not None)
    for op, (fn_native, fn_xla, args, used) in ops.items():
      got, want = fn_native(*args), fn_xla(*args)
      err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
      t_native = median(time_calls(lambda: jax.block_until_ready(fn_native(*args)), a.repeats))
      t_xla = median(time_calls(lambda: jax.block_until_ready(fn_xla(*args)), a.repeats))
      rows.append({'shape': f'{side}px {ci}->{co} {k}x{k} pad {pad[0]}/{pad[1]}', 'op': op,
                   'batch': batch, 'native_ms': t_native * 1e3, 'xla_ms': t_xla * 1e3,
                   'native_gflops': gflop / t_native, 'xla_gflops': gflop / t_xla,
                   'speedup': t_xla / t_native, 'used_by_conv_ops': used,
                   'max_rel_diff': err})
  report('native_kernels', rows, list(rows[0]), a.output)


if __name__ == '__main__':
  runtime.restart_tuned()
  main()
