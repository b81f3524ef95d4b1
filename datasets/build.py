"""Builds one of the prnet-jax TFDS datasets.

  python -m datasets.build synthetic_faces/small [--data_dir=~/tensorflow_datasets]
  python -m datasets.build prnet_300wlp --manual_dir=DIR [--strict] [--num_workers=N]
  python -m datasets.build aflw2000_3d --manual_dir=DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Optional, Sequence

import tensorflow_datasets as tfds

from prnet_jax.data import readers

import datasets  # noqa: F401  (registers the builders)


def make_builder(name: str, data_dir: Optional[str] = None, strict: bool = False,
                 num_workers: Optional[int] = None):
  kwargs = {'data_dir': data_dir, 'file_format': 'array_record', 'num_workers': num_workers}
  if not name.startswith('synthetic_faces'):
    kwargs['strict'] = strict
  return tfds.builder(name, **kwargs)


def build(name: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
          strict: bool = False, num_workers: Optional[int] = None):
  """Builds `name` (e.g. 'synthetic_faces/small') if not built yet; returns the builder."""
  builder = make_builder(name, data_dir, strict, num_workers)
  instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
  if instructions and not builder.is_prepared():
    manual_dir = manual_dir or os.path.join(builder.data_dir_root, 'downloads', 'manual')
    if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
      raise FileNotFoundError(f'{manual_dir}: manual directory missing or empty; {name} '
                              f'needs files you download yourself.\n{instructions}')
  if not builder.is_prepared():
    remove_stale_builds(builder)
  config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=config, file_format='array_record')
  return builder


def remove_stale_builds(builder) -> list[str]:
  """Removes the ``incomplete.*`` folders that killed builds of this dataset config left beside
  its version folders (TFDS never reuses them); returns their paths. One build of a dataset
  config runs at a time (TFDS cannot finish two into the same version folder)."""
  parent = os.path.dirname(builder.data_dir)
  if not os.path.isdir(parent):
    return []
  removed = []
  for name in sorted(os.listdir(parent)):
    path = os.path.join(parent, name)
    if name.startswith('incomplete.') and os.path.isdir(path):
      size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
                 for f in files)
      shutil.rmtree(path)
      print(f'removed {path} ({size / 1e6:.1f} MB), left by an interrupted build', flush=True)
      removed.append(path)
  return removed


def ensure_built(name: str, data_dir: Optional[str] = None):
  """Builds `name` on first use if it needs no downloads (synthetic_faces); for a dataset built
  from files you download, raises FileNotFoundError with what to download and the build
  command. Returns the builder."""
  builder = make_builder(name, data_dir)
  if builder.is_prepared():
    return builder
  instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
  if instructions:
    raise FileNotFoundError(
        f'Dataset {name} is not prepared in {builder.data_dir_root}. Build it with:\n'
        f'  python -m datasets.build {name} --manual_dir=DIR' +
        (f' --data_dir={data_dir}' if data_dir else '') + f'\n{instructions}')
  print(f'building {name} (first run only) ...', flush=True)
  return build(name, data_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('name', help='dataset[/config], e.g. synthetic_faces/small')
  p.add_argument('--data_dir', default=None)
  p.add_argument('--manual_dir', default=None)
  p.add_argument('--strict', action='store_true', help='stop at the first broken sample')
  p.add_argument('--num_workers', type=int, default=None, help='processes (default: all cores)')
  a = p.parse_args(argv)
  try:
    builder = build(a.name, a.data_dir, a.manual_dir, a.strict, a.num_workers)
  except (FileNotFoundError, readers.SampleError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{a.name}: {builder.data_dir}')
  for split, info in builder.info.splits.items():
    print(f'  {split}: {info.num_examples} examples')
  return 0


if __name__ == '__main__':
  sys.exit(main())
