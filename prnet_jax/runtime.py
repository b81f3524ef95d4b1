"""Process settings that make XLA:CPU faster, applied only where a program asks for them.

Nothing here runs on import. ``launch.py`` and the benchmarks call `restart_tuned()` first thing
in their ``__main__`` block; a notebook can call `apply_cpu_xla_flags()` before JAX starts.

* XLA flag (`CPU_XLA_FLAGS`): convolutions on XLA's Eigen kernels instead of its YNNPACK fusions,
  measured 1.4x faster for the PRNet train step and 1.4x for inference on a 2-core AVX-512 Xeon
  (BENCHMARKS.md). It changes how XLA runs convolutions on CPUs, not what they compute, and does
  nothing on accelerators. ``PRNET_JAX_KEEP_XLA_FLAGS=1`` leaves ``XLA_FLAGS`` alone.
* glibc huge pages (`HUGEPAGE_TUNABLE`): XLA:CPU allocates each step's activations afresh; with
  4 KiB pages the full-model train step took ~590,000 page faults per step, with 2 MiB
  transparent huge pages ~2,000 (3.36 s -> 2.88 s per step). glibc >= 2.35 on Linux; it must be
  in the environment when the process starts, hence the restart.
  ``PRNET_JAX_NO_HUGEPAGES=1`` turns it off.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping, Optional

CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',)
HUGEPAGE_TUNABLE = 'glibc.malloc.hugetlb=1'


def _opted_out(environ: Mapping[str, str], name: str) -> bool:
  return environ.get(name, '') not in ('', '0')


def cpu_xla_flags_env(environ: Mapping[str, str] = os.environ) -> dict:
  """`environ` with `CPU_XLA_FLAGS` appended to ``XLA_FLAGS`` (a flag the user already set keeps
  the user's value)."""
  env = dict(environ)
  if _opted_out(environ, 'PRNET_JAX_KEEP_XLA_FLAGS'):
    return env
  flags = env.get('XLA_FLAGS', '')
  for flag in CPU_XLA_FLAGS:
    if flag.split('=')[0] not in flags:
      flags = f'{flags} {flag}'.strip()
  if flags:
    env['XLA_FLAGS'] = flags
  return env


def hugepage_malloc_env(environ: Mapping[str, str] = os.environ) -> Optional[dict]:
  """`environ` plus the glibc huge-page tunable, or None if it is set, unsupported or opted out
  (``PRNET_JAX_NO_HUGEPAGES=1``)."""
  if sys.platform != 'linux' or _opted_out(environ, 'PRNET_JAX_NO_HUGEPAGES'):
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


def tuned_env(environ: Mapping[str, str] = os.environ) -> dict:
  """`environ` with both settings (each where supported and not opted out)."""
  env = cpu_xla_flags_env(environ)
  return hugepage_malloc_env(env) or env


def apply_cpu_xla_flags() -> None:
  """Sets `CPU_XLA_FLAGS` in this process's ``XLA_FLAGS``; effective if JAX has not started its
  CPU backend yet (e.g. the first cell of a notebook)."""
  os.environ.update(cpu_xla_flags_env(os.environ))


def restart_tuned() -> None:
  """Re-executes the running script (same argv, same PID) in `tuned_env`, unless it already
  runs in it. Call it first thing in a ``__main__`` block, before any work is done."""
  env = tuned_env(os.environ)
  if env != dict(os.environ):
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def default_compilation_cache_dir(environ: Mapping[str, str] = os.environ) -> str:
  """The user's cache folder for compiled XLA programs: $PRNET_JAX_CACHE_DIR, else
  $XDG_CACHE_HOME/prnet_jax/xla (~/.cache/prnet_jax/xla; %LOCALAPPDATA% on Windows)."""
  if environ.get('PRNET_JAX_CACHE_DIR'):
    return environ['PRNET_JAX_CACHE_DIR']
  if sys.platform == 'win32' and environ.get('LOCALAPPDATA'):
    base = environ['LOCALAPPDATA']
  else:
    base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'prnet_jax', 'xla')


def enable_compilation_cache(path: Optional[str] = None) -> Optional[str]:
  """JAX's persistent compilation cache in `path` (default: `default_compilation_cache_dir()`),
  so a command's second run skips compiling the network (seconds on a CPU). Keeps a cache folder
  the user already chose (``JAX_COMPILATION_CACHE_DIR``). Returns the folder, or None (with a
  note on stderr) when it cannot be created: the program then compiles as usual."""
  import jax
  chosen = jax.config.jax_compilation_cache_dir
  if chosen:
    return chosen
  path = path or default_compilation_cache_dir()
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    print(f'note: no compilation cache ({path}: {e.strerror or e}); compiling as usual',
          file=sys.stderr)
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  # The network's compile takes seconds; cache everything that takes a little.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  return path


def log(msg: str) -> None:
  """Prints `msg` (flushed) on process 0 only: one line per event on a pod, not one per host."""
  import jax  # here, not at the top: this module must be importable before JAX starts
  if jax.process_index() == 0:
    print(msg, flush=True)
