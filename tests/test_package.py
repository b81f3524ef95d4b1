"""The package as a whole: no import cycles, no side effects on import, declared dependencies,
the process settings of `prnet_jax.runtime` (applied by launch.py), and which packages the
trainer needs."""

import ast
import json
import os
import platform
import re
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from packaging.requirements import Requirement

from prnet_jax import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'prnet_jax')


# ------------------------------------------------------------------------------ structure

def package_modules() -> dict[str, str]:
  """'prnet_jax.x' (or 'prnet_jax.native') -> file, for every module of the package."""
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, '.')
        out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(folder, f)
  return out


def imports_of(path: str, modules: set[str]) -> tuple[set[str], set[str]]:
  """(package modules, other top-level names) imported anywhere in the file, function-level
  imports included."""
  inside, outside = set(), set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    for name in names:
      if name.split('.')[0] != 'prnet_jax':
        outside.add(name.split('.')[0])
        continue
      # The longest package module the name refers to (a module, or a name inside one).
      parts = name.split('.')
      for k in range(len(parts), 0, -1):
        if '.'.join(parts[:k]) in modules:
          inside.add('.'.join(parts[:k]))
          break
  return inside, outside


def find_cycle(graph: dict[str, set[str]]):
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_cycle_finder_finds_a_cycle():  # the check below can fail
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_no_import_cycles_and_no_imports_of_the_repository_folders():
  modules = package_modules()
  assert 'prnet_jax.train' in modules and 'prnet_jax.native' in modules
  graph, outside = {}, {}
  for name, path in modules.items():
    inside, other = imports_of(path, set(modules))
    graph[name] = inside - {name, 'prnet_jax'}
    outside[name] = other
  assert graph['prnet_jax.train'] >= {'prnet_jax.evaluator', 'prnet_jax.checkpointing'}
  assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))
  # The repository's datasets/, configs/, benchmarks/ and tests/ are not part of an install.
  for name, other in outside.items():
    assert not other & {'datasets', 'configs', 'benchmarks', 'tests'}, (name, other)


def test_importing_every_module_changes_no_process_state():
  """The environment after importing every module equals the one after importing just the
  third-party packages they import (some of those set variables of their own)."""
  modules = package_modules()
  third_party = sorted(set().union(*(imports_of(p, set(modules))[1] for p in modules.values()))
                       - set(sys.stdlib_module_names) - {'__future__', 'tensorflow'})
  code = '''
import importlib, json, os, sys
third_party, ours = json.loads(sys.argv[1])
for name in third_party:
  importlib.import_module(name)
before = dict(os.environ)
for name in ours:
  importlib.import_module(name)
print(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)))
'''
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  r = subprocess.run([sys.executable, '-c', code, json.dumps([third_party, sorted(modules)])],
                     env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'jax' in third_party and 'cv2' in third_party
  assert r.stdout.strip().splitlines()[-1] == '[]'


def _name(requirement: str) -> str:
  return re.sub(r'[-_.]+', '-', Requirement(requirement).name).lower()


def test_pyproject_declares_exactly_the_pinned_requirements():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    declared = {_name(r): Requirement(r) for r in tomllib.load(f)['project']['dependencies']}
  pinned = {}
  for line in open(os.path.join(ROOT, 'requirements.txt')):
    line = line.split('#')[0].strip()
    if line:
      req = Requirement(line)
      pinned[_name(line)] = next(iter(req.specifier)).version
  assert set(declared) == set(pinned), (set(declared) ^ set(pinned))
  for name, version in pinned.items():
    assert declared[name].specifier.contains(version), (name, version, declared[name])


# ------------------------------------------------------------------------------ runtime

def test_cpu_xla_flags_are_added_once_and_respect_the_user():
  flags = ' '.join(runtime.CPU_XLA_FLAGS)
  assert runtime.cpu_xla_flags_env({})['XLA_FLAGS'] == flags
  mine = '--xla_cpu_experimental_ynn_fusion_type=dot --xla_dump_to=/tmp/x'
  assert runtime.cpu_xla_flags_env({'XLA_FLAGS': mine})['XLA_FLAGS'] == mine  # the user's wins
  assert runtime.cpu_xla_flags_env({'XLA_FLAGS': '--xla_dump_to=/tmp/x'})['XLA_FLAGS'] == (
      '--xla_dump_to=/tmp/x ' + flags)
  assert 'XLA_FLAGS' not in runtime.cpu_xla_flags_env({'PRNET_JAX_KEEP_XLA_FLAGS': '1'})


glibc_only = pytest.mark.skipif(sys.platform != 'linux' or platform.libc_ver()[0] != 'glibc',
                                reason='glibc tunables exist only with glibc on Linux')


@glibc_only
def test_hugepage_malloc_env():
  supported = tuple(int(v) for v in platform.libc_ver()[1].split('.')[:2]) >= (2, 35)
  env = runtime.hugepage_malloc_env({'PATH': '/bin'})
  if not supported:
    assert env is None
    return
  assert env == {'PATH': '/bin', 'GLIBC_TUNABLES': runtime.HUGEPAGE_TUNABLE}
  env = runtime.hugepage_malloc_env({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'})
  assert env['GLIBC_TUNABLES'] == f'glibc.malloc.arena_max=2:{runtime.HUGEPAGE_TUNABLE}'
  assert runtime.hugepage_malloc_env({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}) is None
  assert runtime.hugepage_malloc_env({'PRNET_JAX_NO_HUGEPAGES': '1'}) is None


@glibc_only
def test_restart_tuned_runs_the_same_argv_in_the_tuned_environment(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in (
      'GLIBC_TUNABLES', 'PRNET_JAX_NO_HUGEPAGES', 'XLA_FLAGS', 'PRNET_JAX_KEEP_XLA_FLAGS')}
  env['PYTHONPATH'] = os.pathsep.join([ROOT] + ([env['PYTHONPATH']] if 'PYTHONPATH' in env
                                                else []))
  script = tmp_path / 'probe.py'
  script.write_text('import os, sys\nfrom prnet_jax import runtime\nruntime.restart_tuned()\n'
                    'print(os.environ.get("GLIBC_TUNABLES"), os.environ.get("XLA_FLAGS"), '
                    'sys.argv[1:], os.getpid())\n')
  r = subprocess.Popen([sys.executable, str(script), '--x=1'], env=env, cwd=tmp_path,
                       stdout=subprocess.PIPE, text=True)
  out = r.communicate(timeout=120)[0].strip()
  expected = runtime.tuned_env(env)
  assert out == (f"{expected.get('GLIBC_TUNABLES')} {expected['XLA_FLAGS']} ['--x=1'] "
                 f"{r.pid}")  # the same process, restarted once


# ------------------------------------------------------------------------------ dependencies

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
from prnet_jax.face_assets import uv_assets_for
c = prnet.get_config('small')
c.model.width, c.batch_size, c.augment = 2, 2, None
trainer = train.make_trainer(c, 10, uv_assets_for('procedural', 64))
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
