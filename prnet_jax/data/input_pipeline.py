"""Input pipeline: grain over TFDS array_record sources, per-process shards, global jax.Arrays.

    source = data_source('synthetic_faces/small', 'train', data_dir)
    loader = train_loader(source, global_batch_size=32, seed=0, resolution=64)  # grain
    batches = DeviceIterator(loader, sharding)       # dicts of global, sharded jax.Arrays
    state = batches.get_state()                      # save with the checkpoint ...
    batches.set_state(state)                         # ... and resume exactly there

One seeded, per-epoch-shuffled, repeated stream of record indices is cut into global batches;
every JAX process decodes (JPEG + position map, in threads, or `worker_count` processes) only its
rows of each, and `jax.make_array_from_process_local_data` assembles the global array. So the
global batches do not depend on the number of processes or devices.
Augmentation runs afterwards on the accelerator (`prnet_jax.data.augment`).
"""

from __future__ import annotations

import copy
import os
import queue
import threading
from typing import Any, Optional

import jax
import numpy as np

from prnet_jax.data import image_io, posmap_codec

FIELDS = ('image', 'position_map', 'landmarks', 'yaw_bucket')  # of a DeviceIterator's batches
RESIDUALS = 'position_map_residuals'  # DecodeExample(posmap_residuals=True) -> DeviceIterator
# Datasets built from files the user downloads, and what goes in the manual dir (the builders in
# the repository's datasets/ say more: `python -m datasets.build NAME` prints it).
MANUAL_DATASETS = {
    'prnet_300wlp': '300W_LP/ (the 300W-LP release) and BFM/ (BFM.mat, BFM_UV.mat from face3d)',
    'aflw2000_3d': 'AFLW2000/ (the AFLW2000-3D release; optional BFM/ for dense maps)',
    'florence': 'Florence/ (the MICC Florence scans, one folder per subject)',
}


class DatasetNotFoundError(FileNotFoundError):
  pass


def _default_data_dir() -> str:
  return os.path.expanduser(os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets'))


def prepared_builder(name: str, data_dir: Optional[str] = None):
  """The built dataset `name` ('dataset[/config]', the newest version) under `data_dir`, read
  from its files: the builders' code (the repository's `datasets/`) is not needed, only what
  `python -m datasets.build` wrote. Raises DatasetNotFoundError with the build command."""
  import tensorflow_datasets as tfds
  root = data_dir or _default_data_dir()
  try:
    return tfds.core.read_only_builder.builder_from_files(name, data_dir=root,
                                                          file_format='array_record')
  except (tfds.core.registered.DatasetNotFoundError, FileNotFoundError, ValueError) as e:
    dataset = name.split('/')[0]
    manual = (f' --manual_dir=DIR\nwhere DIR holds files you download yourself: '
              f'{MANUAL_DATASETS[dataset]}' if dataset in MANUAL_DATASETS else '')
    raise DatasetNotFoundError(
        f'Dataset {name} is not prepared in {root} ({type(e).__name__}). Build it with:\n'
        f'  python -m datasets.build {name}' + (f' --data_dir={data_dir}' if data_dir else '')
        + manual) from e


def data_source(name: str, split: str, data_dir: Optional[str] = None):
  """The random-access source of a built dataset's split (see `prepared_builder`)."""
  return prepared_builder(name, data_dir).as_data_source(split=split)


def _resize(array: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image
  if array.shape[0] == size:
    return array
  return np.stack([np.asarray(Image.fromarray(array[..., c].astype(np.float32), mode='F')
                              .resize((size, size), Image.BILINEAR))
                   for c in range(array.shape[-1])], -1)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """(H, H, 3) uint8 -> (size, size, 3) uint8, bilinear."""
  return np.clip(_resize(image.astype(np.float32), size), 0, 255).astype(np.uint8)


def rescale_points(points: np.ndarray, k: float, keep_zeros: bool = False) -> np.ndarray:
  """(..., 3) pixel positions (x, y, z) of an image resized by `k`: x, y as the resize maps
  pixel centres, (x + 0.5) * k - 0.5; z * k. `keep_zeros`: all-zero points (a position
  map's background) stay zero."""
  p = np.asarray(points, np.float32)
  out = p * np.float32(k)
  out[..., :2] += np.float32(0.5 * k - 0.5)
  if keep_zeros:
    out[~np.any(p != 0, axis=-1)] = 0
  return out


class DecodeExample:
  """Record -> {'image': uint8 (R, R, 3), 'position_map': float32 (R, R, 3),
  'landmarks': float32 (68, 3), 'yaw_bucket': int32}, resized to `resolution` if needed:
  positions follow the image, whose resize maps pixel centres (x + 0.5) * k - 0.5 for a
  scale k; z is scaled by k.

  `posmap_residuals`: where no resize is needed, give 'position_map_residuals' ((2, R, R, 3)
  uint8 byte planes, the codec's host half) instead of 'position_map', for `DeviceIterator` to
  finish on the accelerator (the running sums were 2/3 of a record's host time)."""

  def __init__(self, resolution: int, posmap_residuals: bool = False):
    self.resolution = resolution
    self.posmap_residuals = posmap_residuals

  def map(self, ex: dict[str, Any]) -> dict[str, np.ndarray]:
    image = image_io.decode_record(ex['image'])
    raw = ex['position_map']
    landmarks = np.asarray(ex['landmarks_3d'], np.float32)
    out = {'landmarks': landmarks, 'yaw_bucket': np.int32(ex['yaw_bucket'])}
    if image.shape[0] == self.resolution and self.posmap_residuals:
      out[RESIDUALS] = (posmap_codec.residuals(raw) if len(raw) else
                        posmap_codec.zero_residuals(image.shape[:2] + (3,)))
      return {'image': image, **out}
    pos = (posmap_codec.decode(raw) if len(raw) else
           np.zeros(image.shape[:2] + (3,), np.float32))
    if image.shape[0] != self.resolution:
      k = self.resolution / image.shape[0]
      image = resize_image(image, self.resolution)
      pos = rescale_points(_resize(pos, self.resolution), k, keep_zeros=True)
      out['landmarks'] = rescale_points(landmarks, k)
    return {'image': image, 'position_map': pos.astype(np.float32), **out}


def local_batch_size(global_batch_size: int) -> int:
  n = jax.process_count()
  if global_batch_size % n:
    raise ValueError(f'global batch size {global_batch_size} is not divisible by the '
                     f'{n} JAX processes')
  return global_batch_size // n


class _LocalBatch:
  """Global batch of record indices -> this process's decoded slice, stacked."""

  def __init__(self, source, decode: DecodeExample, start: int, size: int):
    self.source, self.decode, self.start, self.size = source, decode, start, size

  def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    examples = [self.decode.map(self.source[int(i)])
                for i in indices[self.start:self.start + self.size]]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def train_loader(source, global_batch_size: int, seed: int, resolution: int,
                 worker_count: int = 0, num_epochs: Optional[int] = None,
                 num_threads: int = 2, posmap_residuals: bool = False):
  """A grain IterDataset of this process's part of each global batch.
  `posmap_residuals`: see `DecodeExample` (for a `DeviceIterator`, which finishes them).

  The record order is one seeded global stream (reshuffled every epoch, repeated), cut into
  global batches; process p decodes rows [p * L, (p + 1) * L) of each. So the global batches
  are the same for any number of processes and devices: a seed fixes the data order."""
  import grain
  local = local_batch_size(global_batch_size)
  ds = (grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat(num_epochs)
        .batch(global_batch_size, drop_remainder=True)
        .map(_LocalBatch(source, DecodeExample(resolution, posmap_residuals),
                         jax.process_index() * local, local)))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4))
  if worker_count > 0:
    # grain's worker processes read absl flags; outside an absl app (notebooks, scripts) mark
    # them parsed so their defaults apply.
    from absl import flags
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return ds


def to_global(local: dict[str, np.ndarray], sharding: jax.sharding.Sharding
              ) -> dict[str, jax.Array]:
  """Per-process batches -> global arrays sharded along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items() if k in FIELDS or k == RESIDUALS}


class DeviceIterator:
  """Global-array batches from a `train_loader`, prefetched by a background thread; position
  map residuals (`posmap_residuals=True`) become 'position_map' on the devices.

  `get_state()` is the loader position after the last batch *returned* (not prefetched),
  so a run resumed from it sees exactly the batches an uninterrupted run would have seen."""

  def __init__(self, loader, sharding: jax.sharding.Sharding, prefetch: int = 2,
               state: Optional[dict] = None):
    self._loader = loader
    self._sharding = sharding
    self._prefetch = prefetch
    self._integrate = jax.jit(posmap_codec.integrate_on_device, out_shardings=sharding)
    self._start(state)

  def _start(self, state: Optional[dict]) -> None:
    self._it = iter(self._loader)
    if state is not None:
      self._it.set_state(copy.deepcopy(state))
    self._state = copy.deepcopy(self._it.get_state())
    self._queue: queue.Queue = queue.Queue(maxsize=self._prefetch)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True)
    self._thread.start()

  def _fill(self) -> None:
    try:
      while not self._stop.is_set():
        local = next(self._it)
        batch = to_global(local, self._sharding)
        if RESIDUALS in batch:
          batch['position_map'] = self._integrate(batch.pop(RESIDUALS))
        item = (batch, copy.deepcopy(self._it.get_state()))
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # StopIteration or a decode error: hand it to the consumer
      self._queue.put(e)

  def __iter__(self) -> 'DeviceIterator':
    return self

  def __next__(self) -> dict[str, jax.Array]:
    item = self._queue.get()
    if isinstance(item, BaseException):
      self._queue.put(item)  # keep raising on later calls
      raise item
    batch, self._state = item
    return batch

  def get_state(self) -> dict:
    return self._state

  def set_state(self, state: dict) -> None:
    self.close()
    self._start(state)

  def close(self) -> None:
    self._stop.set()
    while True:  # unblock the producer
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join(timeout=10)
