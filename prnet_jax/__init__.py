"""prnet_jax: PRNet (Feng et al., ECCV 2018) in JAX/Flax.

Importing the package adds the XLA:CPU flags of ``CPU_XLA_FLAGS`` to ``XLA_FLAGS`` (unless the
variable already names them, or ``PRNET_JAX_KEEP_XLA_FLAGS=1``). They take effect if JAX has not
started its CPU backend yet, so import ``prnet_jax`` before running JAX code; they change how XLA
runs convolutions on CPUs, not what it computes, and do nothing on accelerators.

``hugepage_malloc_env`` gives the environment in which glibc backs large allocations with
transparent huge pages; ``launch.py`` and the benchmarks restart themselves in it (it must be
set before a process starts).
"""

import os
import platform
import sys
from typing import Mapping, Optional

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


# XLA:CPU allocates every activation of a step afresh; with 4 KiB pages the full-model train step
# took ~590,000 page faults (0.8 CPU-seconds of zeroing) per step, with 2 MiB transparent huge
# pages ~2,000: measured 3.36 s -> 2.88 s per step (BENCHMARKS.md). glibc >= 2.35 on Linux.
HUGEPAGE_TUNABLE = 'glibc.malloc.hugetlb=1'


def hugepage_malloc_env(environ: Mapping[str, str] = os.environ) -> Optional[dict]:
  """`environ` plus the glibc huge-page tunable, or None if it is set, unsupported or opted out
  (``PRNET_JAX_NO_HUGEPAGES=1``)."""
  if sys.platform != 'linux' or environ.get('PRNET_JAX_NO_HUGEPAGES', '') not in ('', '0'):
    return None
  lib, version = platform.libc_ver()
  try:
    if lib != 'glibc' or tuple(int(v) for v in version.split('.')[:2]) < (2, 35):
      return None
  except ValueError:
    return None
  tunables = environ.get('GLIBC_TUNABLES', '')
  if 'glibc.malloc.hugetlb' in tunables:
    return None
  return dict(environ, GLIBC_TUNABLES=f'{tunables}:{HUGEPAGE_TUNABLE}'.lstrip(':'))


def restart_with_hugepage_malloc() -> None:
  """Re-executes the running script (same argv, same PID) with `hugepage_malloc_env`, if needed.

  Call it first thing in a ``__main__`` block, before any work is done.
  """
  env = hugepage_malloc_env()
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
