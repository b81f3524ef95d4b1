"""Input pipeline: grain over TFDS array_record sources, per-process shards, global jax.Arrays.

    source = data_source('synthetic_faces/small', 'train', data_dir)
    loader = train_loader(source, global_batch_size=32, seed=0, resolution=64)
    batches = DeviceIterator(loader, sharding)       # dicts of global, sharded jax.Arrays
    state = batches.get_state()                      # save with the checkpoint ...
    batches.set_state(state)                         # ... and resume exactly there

Every JAX process reads its own shard of the (seeded, shuffled, repeated) index stream, decodes
JPEG + position map on the host (in `worker_count` processes if > 0), batches its part of the
global batch, and `jax.make_array_from_process_local_data` assembles the global array.
Augmentation runs afterwards on the accelerator (`prnet_jax.augment`).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Optional

import grain.python as grain
import jax
import numpy as np

from prnet_jax import data_io, posmap_codec

FIELDS = ('image', 'position_map', 'landmarks', 'yaw_bucket')


class DatasetNotFoundError(FileNotFoundError):
  pass


def data_source(name: str, split: str, data_dir: Optional[str] = None):
  """The TFDS random-access source of `name` ('dataset[/config]'); a clear error if unbuilt."""
  import tensorflow_datasets as tfds
  import datasets  # noqa: F401  (registers the builders)
  builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  if not builder.is_prepared():
    instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
    msg = (f'Dataset {name} is not prepared in {builder.data_dir_root}. Build it with:\n'
           f'  python -m datasets.build {name}' +
           (f' --data_dir={data_dir}' if data_dir else ''))
    if instructions:
      msg += f' --manual_dir=DIR\n{instructions}'
    raise DatasetNotFoundError(msg)
  return builder.as_data_source(split=split)


def _resize(array: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image
  if array.shape[0] == size:
    return array
  return np.stack([np.asarray(Image.fromarray(array[..., c].astype(np.float32), mode='F')
                              .resize((size, size), Image.BILINEAR))
                   for c in range(array.shape[-1])], -1)


class DecodeExample(grain.MapTransform):
  """Record -> {'image': uint8 (R, R, 3), 'position_map': float32 (R, R, 3),
  'landmarks': float32 (68, 3), 'yaw_bucket': int32}, resized to `resolution` if needed
  (positions scaled with the image)."""

  def __init__(self, resolution: int):
    self.resolution = resolution

  def map(self, ex: dict[str, Any]) -> dict[str, np.ndarray]:
    image = data_io.decode_image(ex['image'])
    raw = ex['position_map']
    pos = (posmap_codec.decode(raw) if len(raw) else
           np.zeros(image.shape[:2] + (3,), np.float32))
    landmarks = np.asarray(ex['landmarks_3d'], np.float32)
    if image.shape[0] != self.resolution:
      k = self.resolution / image.shape[0]
      image = np.clip(_resize(image.astype(np.float32), self.resolution), 0, 255).astype(
          np.uint8)
      pos = _resize(pos, self.resolution) * np.float32(k)
      landmarks = landmarks * np.float32(k)
    return {'image': image, 'position_map': pos.astype(np.float32), 'landmarks': landmarks,
            'yaw_bucket': np.int32(ex['yaw_bucket'])}


def local_batch_size(global_batch_size: int) -> int:
  n = jax.process_count()
  if global_batch_size % n:
    raise ValueError(f'global batch size {global_batch_size} is not divisible by the '
                     f'{n} JAX processes')
  return global_batch_size // n


def train_loader(source, global_batch_size: int, seed: int, resolution: int,
                 worker_count: int = 0, num_epochs: Optional[int] = None) -> grain.DataLoader:
  """Shuffled (by `seed`), repeated, this process's shard, batched to its part of the batch."""
  if worker_count > 0:
    # grain's worker processes read absl flags; outside an absl app (notebooks, scripts) mark
    # them parsed so their defaults apply.
    from absl import flags
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
  sampler = grain.IndexSampler(
      num_records=len(source), shuffle=True, seed=seed, num_epochs=num_epochs,
      shard_options=grain.ShardOptions(shard_index=jax.process_index(),
                                       shard_count=jax.process_count(), drop_remainder=True))
  return grain.DataLoader(
      data_source=source, sampler=sampler, worker_count=worker_count,
      operations=[DecodeExample(resolution),
                  grain.Batch(local_batch_size(global_batch_size), drop_remainder=True)])


def to_global(local: dict[str, np.ndarray], sharding: jax.sharding.Sharding
              ) -> dict[str, jax.Array]:
  """Per-process batches -> global arrays sharded along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items() if k in FIELDS}


class DeviceIterator:
  """Global-array batches from a grain loader, prefetched by a background thread.

  `get_state()` is the loader position after the last batch *returned* (not prefetched),
  so a run resumed from it sees exactly the batches an uninterrupted run would have seen."""

  def __init__(self, loader: grain.DataLoader, sharding: jax.sharding.Sharding,
               prefetch: int = 2, state: Optional[bytes] = None):
    self._loader = loader
    self._sharding = sharding
    self._prefetch = prefetch
    self._start(state)

  def _start(self, state: Optional[bytes]) -> None:
    self._it = iter(self._loader)
    if state is not None:
      self._it.set_state(state)
    self._state = self._it.get_state()
    self._queue: queue.Queue = queue.Queue(maxsize=self._prefetch)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True)
    self._thread.start()

  def _fill(self) -> None:
    try:
      while not self._stop.is_set():
        local = next(self._it)
        item = (to_global(local, self._sharding), self._it.get_state())
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

  def get_state(self) -> bytes:
    return self._state

  def set_state(self, state: bytes) -> None:
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
