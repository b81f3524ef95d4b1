"""Shared fixtures: the reference files of ../shared (skipped cleanly on a fresh clone)."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_REFERENCE = os.environ.get(
    'PRNET_SHARED_REFERENCE', os.path.join(ROOT, '..', 'shared', 'reference'))


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
