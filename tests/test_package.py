"""Process-level settings made by importing prnet_jax (XLA flags) and by launch.py (malloc)."""

import os
import platform
import subprocess
import sys

import pytest

import prnet_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_adds_the_cpu_xla_flags_once_and_respects_opt_out():
  code = 'import os, prnet_jax; print(os.environ.get("XLA_FLAGS", ""))'
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS',
                                                          'PRNET_JAX_KEEP_XLA_FLAGS')}
  run = lambda e: subprocess.run([sys.executable, '-c', code], env=e, cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
  assert run(env) == ' '.join(prnet_jax.CPU_XLA_FLAGS)
  mine = '--xla_cpu_experimental_ynn_fusion_type=dot --xla_dump_to=/tmp/x'
  assert run(dict(env, XLA_FLAGS=mine)) == mine  # the user's own value of the flag wins
  assert run(dict(env, XLA_FLAGS='--xla_dump_to=/tmp/x')) == (
      '--xla_dump_to=/tmp/x ' + ' '.join(prnet_jax.CPU_XLA_FLAGS))
  assert run(dict(env, PRNET_JAX_KEEP_XLA_FLAGS='1')) == ''


@pytest.mark.skipif(sys.platform != 'linux' or platform.libc_ver()[0] != 'glibc',
                    reason='glibc tunables exist only with glibc on Linux')
def test_hugepage_malloc_env():
  supported = tuple(int(v) for v in platform.libc_ver()[1].split('.')[:2]) >= (2, 35)
  env = prnet_jax.hugepage_malloc_env({'PATH': '/bin'})
  if not supported:
    assert env is None
    return
  assert env == {'PATH': '/bin', 'GLIBC_TUNABLES': prnet_jax.HUGEPAGE_TUNABLE}
  env = prnet_jax.hugepage_malloc_env({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'})
  assert env['GLIBC_TUNABLES'] == f'glibc.malloc.arena_max=2:{prnet_jax.HUGEPAGE_TUNABLE}'
  assert prnet_jax.hugepage_malloc_env({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}) is None
  assert prnet_jax.hugepage_malloc_env({'PRNET_JAX_NO_HUGEPAGES': '1'}) is None


@pytest.mark.skipif(sys.platform != 'linux' or platform.libc_ver()[0] != 'glibc',
                    reason='glibc tunables exist only with glibc on Linux')
def test_launch_restarts_itself_with_the_tunable(tmp_path):
  """The restarted process (same argv) sees the tunable; the flag value reaches the program."""
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES',
                                                          'PRNET_JAX_NO_HUGEPAGES')}
  env['PYTHONPATH'] = os.pathsep.join([ROOT] + ([env['PYTHONPATH']] if 'PYTHONPATH' in env
                                                else []))
  code = ('import os, sys, prnet_jax; prnet_jax.restart_with_hugepage_malloc(); '
          'print(os.environ.get("GLIBC_TUNABLES"), sys.argv[1:])')
  script = tmp_path / 'probe.py'
  script.write_text(code)
  out = subprocess.run([sys.executable, str(script), '--x=1'], env=env, cwd=tmp_path,
                       capture_output=True, text=True, check=True).stdout.strip()
  expected = prnet_jax.hugepage_malloc_env(env)
  tunable = expected['GLIBC_TUNABLES'] if expected else None
  assert out == f"{tunable} ['--x=1']"
