"""Process-level settings made by importing prnet_jax (XLA flags) and by launch.py (malloc), and
which packages the trainer needs."""

import os
import platform
import subprocess
import sys

import numpy as np
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


def test_trainer_and_model_need_no_input_pipeline_packages():
  """Accelerator images often lack grain / TFDS / TensorFlow: the model, the jitted train step
  (make_trainer) and the benchmarks built on them must import and run without them."""
  code = '''
import builtins, sys
real = builtins.__import__
def guard(name, *args, **kwargs):
  if name.split('.')[0] in ('grain', 'tensorflow', 'tensorflow_datasets', 'array_record'):
    raise ImportError('blocked for this test: ' + name)
  return real(name, *args, **kwargs)
builtins.__import__ = guard
sys.path.insert(0, 'configs')
import jax, numpy as np, prnet
from prnet_jax import train
from prnet_jax.face_model import derive_uv_assets
from prnet_jax.procedural_face import procedural_face_model
c = prnet.get_config('small')
c.model.width, c.batch_size, c.augment = 2, 2, None
trainer = train.make_trainer(c, 10, derive_uv_assets(procedural_face_model(), 64))
batch = jax.device_put({'image': np.zeros((2, 64, 64, 3), np.uint8),
                        'position_map': np.ones((2, 64, 64, 3), np.float32)},
                       trainer.data_sharding)
state, m = trainer.step(trainer.init(jax.random.key(0)), batch)
print('loss', float(m['loss']), sorted(k for k in sys.modules if k.split('.')[0] == 'grain'))
'''
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  loss, modules = r.stdout.split(' ', 2)[1:]
  assert np.isfinite(float(loss)) and modules.strip() == '[]'
