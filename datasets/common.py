"""Features shared by the face builders, and a process pool for generation."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

NUM_LANDMARKS = 68


def face_features(**extra) -> tfds.features.FeaturesDict:
  """One example = one face crop with its ground truth.

  image: encoded JPEG (quality 95) of the crop; position_map: `prnet_jax.posmap_codec` bytes
  (b'' when the dataset has no dense ground truth); landmarks in the crop frame (x, y pixels,
  z depth); pose: Pose_Para of the original image; crop_transform: original -> crop (3x3)."""
  return tfds.features.FeaturesDict({
      'image': tfds.features.Scalar(dtype=np.object_),
      'position_map': tfds.features.Scalar(dtype=np.object_),
      'landmarks_3d': tfds.features.Tensor(shape=(NUM_LANDMARKS, 3), dtype=np.float32),
      'landmarks_2d': tfds.features.Tensor(shape=(NUM_LANDMARKS, 2), dtype=np.float32),
      'pose': tfds.features.Tensor(shape=(7,), dtype=np.float32),
      'crop_transform': tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
      'yaw_bucket': tfds.features.Scalar(dtype=np.int32),
      'file_name': tfds.features.Text(),
      **extra,
  })


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], num_workers: Optional[int],
                 initializer: Optional[Callable] = None, initargs: tuple = ()) -> Iterator[Any]:
  """fn over items in order, on `num_workers` spawned processes (all cores when None; inline
  when 0). Spawn, not fork: the workers use JAX, which must not be forked once initialised."""
  workers = os.cpu_count() or 1 if num_workers is None else num_workers
  if workers <= 1 or len(items) < 2:
    if initializer is not None:
      initializer(*initargs)
    yield from map(fn, items)
    return
  ctx = multiprocessing.get_context('spawn')
  with ctx.Pool(workers, initializer=initializer, initargs=initargs) as pool:
    yield from pool.imap(fn, items, chunksize=max(1, min(16, len(items) // (4 * workers))))


def generate(fn: Callable[[Any], Any], items: Sequence[Any], report, num_workers: Optional[int],
             initializer: Optional[Callable] = None, initargs: tuple = ()) -> Iterator[Any]:
  """Yields (key, example) from `fn` over items; `fn` returns a SampleError instead of raising,
  which goes to `report` (printed, counted; raised when the report is strict)."""
  from prnet_jax import data_io
  for result in parallel_map(fn, items, num_workers, initializer, initargs):
    if isinstance(result, data_io.SampleError):
      report.skip(result)
    else:
      report.ok()
      yield result
  print(report.summary(), flush=True)
