"""Shared fixtures: the reference files of ../shared (skipped cleanly on a fresh clone).

The tests run with launch.py's XLA:CPU flags (`prnet_jax.runtime`, set here before JAX starts;
subprocesses inherit them): faster convolutions, the same results.

Also gives the whole test session one persistent XLA compilation cache (a fresh temporary
directory unless JAX_COMPILATION_CACHE_DIR is set): the training tests start many subprocesses
that compile the same train step, and XLA:CPU compiles take most of their time. The cache only
skips recompiling identical programs; the executables are the same.
"""

import atexit
import os
import shutil
import tempfile

if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # before jax is imported; subprocesses inherit it
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='prnet-jax-xla-cache-')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)

from prnet_jax import runtime  # noqa: E402

runtime.apply_cpu_xla_flags()

import pytest  # noqa: E402

from fixtures import ROOT  # noqa: E402

SHARED_REFERENCE = os.environ.get(
    'PRNET_SHARED_REFERENCE', os.path.join(ROOT, '..', 'shared', 'reference'))


# photos/3.jpg (384 x 384, a left profile on a black backdrop) has no .mat: its landmarks' box
# (left, top, right, bottom; nose tip to jaw corner, brow to chin), placed by hand, as in
# benchmarks/detectors.py.
PROFILE_BOX = (97, 150, 235, 320)


def shared_path(*parts: str) -> str:
  """Path under ../shared/reference; skips the calling test when it is absent."""
  path = os.path.join(SHARED_REFERENCE, *parts)
  if not os.path.exists(path):
    pytest.skip(f'{path} not present (../shared/reference is only beside the project in CI '
                f'and development checkouts)')
  return path


@pytest.fixture
def official_uv_dir() -> str:
  return shared_path('prnet-official', 'uv-data')


@pytest.fixture
def official_variables_file() -> str:
  return shared_path('prnet-official', 'checkpoint_variables.txt')


def pytest_collection_modifyitems(config, items):
  """Tests marked slow (`-m "not slow"` leaves them out) must say why in the marker's reason."""
  for item in items:
    marker = item.get_closest_marker('slow')
    if marker is not None and not marker.kwargs.get('reason') and not marker.args:
      raise pytest.UsageError(f'{item.nodeid}: @pytest.mark.slow needs a reason')


# ------------------------------------------------------------------------------ session data

@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory) -> str:
  """synthetic_faces/tiny (64 train + 16 test faces of the procedural world, 64 px), built once
  per test process; returns its data_dir."""
  from datasets import build
  data_dir = str(tmp_path_factory.mktemp('tiny_dataset'))
  build.build('synthetic_faces/tiny', data_dir=data_dir, num_workers=0)
  return data_dir


@pytest.fixture(scope='session')
def pretrained_predictor():
  """The bundled pretrained model with the default detector (loaded once per test process)."""
  from prnet_jax.serving.inference import Predictor
  return Predictor.from_pretrained()
