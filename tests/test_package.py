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
from packaging.requirements import Requirement
import pytest

from prnet_jax import runtime

from fixtures import ROOT

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


# The layers of the package, top (0) to bottom: a module may import its own sub-package and
# those of lower numbers only. The package's __init__ (lazy exports for users) is above all.
LAYERS = {
    'native': 0, 'runtime': 0, 'assets': 0,
    'geometry': 1,
    'faces': 2, 'data': 2, 'nn': 2,
    'worlds': 3, 'evaluation': 3,
    'training': 4,
    'serving': 5,
}


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
  modules = package_modules()
  graph, outside = {}, {}
  for name, path in modules.items():
    inside, other = imports_of(path, set(modules))
    graph[name] = inside - {name, 'prnet_jax'}
    outside[name] = other
  return graph, outside


def part(module: str) -> str:
  """'prnet_jax.nn.model' -> 'nn'; 'prnet_jax.runtime' -> 'runtime'."""
  return module.split('.')[1]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
  """(importer, imported) pairs that import a sub-package of the same or a higher layer."""
  return sorted((a, b) for a, deps in graph.items() if a != 'prnet_jax'
                for b in deps if part(a) != part(b) and LAYERS[part(b)] >= LAYERS[part(a)])


def test_cycle_and_layer_checks_can_fail():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
  assert upward_imports({'prnet_jax.geometry.render': {'prnet_jax.nn.model'},
                         'prnet_jax.nn.model': {'prnet_jax.nn.conv_ops', 'prnet_jax.native'},
                         'prnet_jax.faces.catalog': {'prnet_jax.data.readers'}}) == [
      ('prnet_jax.faces.catalog', 'prnet_jax.data.readers'),
      ('prnet_jax.geometry.render', 'prnet_jax.nn.model')]


def test_the_top_level_holds_sub_packages_and_few_modules():
  entries = sorted(os.listdir(PACKAGE))
  folders = {e for e in entries if os.path.isfile(os.path.join(PACKAGE, e, '__init__.py'))}
  modules = {e for e in entries if e.endswith('.py')}
  assert folders == set(LAYERS) - {'runtime'}, folders
  assert modules == {'__init__.py', 'runtime.py'}, modules


def test_imports_run_downward_without_cycles_or_repository_folders():
  graph, outside = import_graph()
  assert {part(m) for m in graph if m != 'prnet_jax'} == set(LAYERS)
  assert graph['prnet_jax.training.train'] >= {'prnet_jax.evaluation.alignment',
                                               'prnet_jax.training.checkpointer'}
  assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))
  assert upward_imports(graph) == []
  # Serving loads models without the training code (model-variable checkpoints are in nn/).
  assert not any(part(b) == 'training' for a, deps in graph.items() if a != 'prnet_jax' and part(a) == 'serving'
                 for b in deps)
  # The repository's datasets/, configs/, benchmarks/ and tests/ are not part of an install.
  for name, other in outside.items():
    assert not other & {'datasets', 'configs', 'benchmarks', 'tests'}, (name, other)


def test_the_package_exports_resolve_lazily():
  code = ('import sys, prnet_jax; before = {m for m in sys.modules if m.startswith("prnet_jax.")}; '
          'names = {n: getattr(prnet_jax, n).__module__ for n in prnet_jax.__all__}; '
          'print(sorted(before), names["Predictor"])')
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.split() == ['[]', 'prnet_jax.serving.inference']


def test_console_scripts_name_real_command_line_mains():
  """[project.scripts] in pyproject.toml: each points at a module's main(argv=None), and an
  installed one (.ci/run installs the package) answers --help."""
  import importlib
  import inspect
  import shutil
  import tomllib
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    scripts = tomllib.load(f)['project']['scripts']
  assert {'prnet-predict', 'prnet-demo', 'prnet-convert-official'} <= set(scripts)
  for name, target in scripts.items():
    module, func = target.split(':')
    main = getattr(importlib.import_module(module), func)
    assert list(inspect.signature(main).parameters) == ['argv'], name
  exe = shutil.which('prnet-predict', path=os.path.dirname(sys.executable))
  if exe is None:
    pytest.skip('the package is not installed in this environment (pip install -e .)')
  r = subprocess.run([exe, '--help'], capture_output=True, text=True, timeout=600)
  assert r.returncode == 0 and r.stdout.startswith('usage: prnet-predict'), r.stderr[-2000:]


@pytest.mark.slow(reason='subprocess importing every module')
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


def _pinned(path: str) -> dict[str, str]:
  pinned = {}
  for line in open(path):
    line = line.split('#')[0].strip()
    if line and not line.startswith('-r'):
      pinned[_name(line)] = next(iter(Requirement(line).specifier)).version
  return pinned


def test_pyproject_declares_exactly_the_pinned_requirements():
  """requirements.txt pins the core install plus the `train` extra; requirements-test.txt adds
  the `onnx` extra (and test tools): each declared package pinned, each pin declared."""
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  core = {_name(r): Requirement(r) for r in project['dependencies']}
  extras = {k: {_name(r): Requirement(r) for r in v}
            for k, v in project['optional-dependencies'].items()}
  assert not set(core) & set(extras['train']), 'a package is both core and train'
  declared = core | extras['train']
  pinned = _pinned(os.path.join(ROOT, 'requirements.txt'))
  assert set(declared) == set(pinned), (set(declared) ^ set(pinned))
  test_pins = _pinned(os.path.join(ROOT, 'requirements-test.txt'))
  for name, req in list(extras['onnx'].items()) + list(extras['test'].items()):
    assert name in test_pins, f'{name} (an extra the tests need) is not pinned for the tests'
    declared[name] = req
    pinned[name] = test_pins[name]
  for name, version in pinned.items():
    assert declared[name].specifier.contains(version), (name, version, declared[name])
  # The accelerator extras are JAX's own, at the pinned JAX version or later.
  for extra in ('cuda12', 'tpu'):
    (req,) = extras[extra].values()
    assert req.name == 'jax' and req.specifier.contains(pinned['jax']), (extra, req)


PREDICTION_MODULES = ('prnet_jax.serving.predict', 'prnet_jax.serving.app',
                      'prnet_jax.serving.applications', 'prnet_jax.serving.export',
                      'prnet_jax.serving.convert_official', 'prnet_jax.serving.folder_eval')


def test_the_core_install_predicts_without_the_train_extra():
  """Everything the core install serves imports and predicts with the `train` extra's packages
  blocked (a core-only install has none of them); CI also checks a real core-only install."""
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    train = tomllib.load(f)['project']['optional-dependencies']['train']
  blocked = sorted({_module_of(_name(r)) for r in train})
  code = f'''
import builtins, importlib, sys
real = builtins.__import__
def guard(name, *args, **kwargs):
  if name.split('.')[0] in {blocked!r}:
    raise ModuleNotFoundError('blocked for this test: ' + name, name=name.split('.')[0])
  return real(name, *args, **kwargs)
builtins.__import__ = guard
for m in {PREDICTION_MODULES!r}:
  importlib.import_module(m)
import numpy as np
from prnet_jax import Predictor
faces = Predictor.from_pretrained().predict(np.zeros((256, 256, 3), np.uint8), boxes=[(40, 40, 216, 216)])
print(len(faces), faces[0].landmarks.shape)
'''
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.split() == ['1', '(68,', '3)'], r.stdout


def _module_of(distribution: str) -> str:
  return {'ml-collections': 'ml_collections', 'tensorflow-datasets': 'tensorflow_datasets',
          'array-record': 'array_record', 'importlib-resources': 'importlib_resources',
          'tensorboardx': 'tensorboardX'}.get(distribution, distribution)


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

@pytest.mark.slow(reason='subprocess compiling a train step')
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
from prnet_jax.training import train
from prnet_jax.faces.catalog import uv_assets_for
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
