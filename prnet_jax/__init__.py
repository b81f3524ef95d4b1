"""prnet_jax: PRNet (Feng et al., ECCV 2018) in JAX/Flax.

Importing the package adds the XLA:CPU flags of ``CPU_XLA_FLAGS`` to ``XLA_FLAGS`` (unless the
variable already names them, or ``PRNET_JAX_KEEP_XLA_FLAGS=1``). They take effect if JAX has not
started its CPU backend yet, so import ``prnet_jax`` before running JAX code; they change how XLA
runs convolutions on CPUs, not what it computes, and do nothing on accelerators.
"""

import os

# Run convolutions on XLA's Eigen kernels instead of its YNNPACK fusions: measured 1.4x faster
# for the PRNet train step and 1.4x for inference on a 2-core AVX-512 Xeon (BENCHMARKS.md).
CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',)


def _add_cpu_xla_flags() -> None:
  if os.environ.get('PRNET_JAX_KEEP_XLA_FLAGS', '') not in ('', '0'):
    return
  flags = os.environ.get('XLA_FLAGS', '')
  for flag in CPU_XLA_FLAGS:
    if flag.split('=')[0] not in flags:
      flags = f'{flags} {flag}'.strip()
  os.environ['XLA_FLAGS'] = flags


_add_cpu_xla_flags()
