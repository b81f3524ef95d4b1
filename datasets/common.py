"""Features shared by the face builders, and a process pool for generation."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

NUM_LANDMARKS = 68


def face_features(**extra) -> tfds.features.FeaturesDict:
  """One example = one face crop with its ground truth.

  image: encoded JPEG (quality 95) of the crop; position_map: `prnet_jax.data.posmap_codec` bytes
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
  workers = (os.cpu_count() or 1) if num_workers is None else num_workers
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
  from prnet_jax.data import readers
  for result in parallel_map(fn, items, num_workers, initializer, initargs):
    if isinstance(result, readers.SampleError):
      report.skip(result)
    else:
      report.ok()
      yield result
  print(report.summary(), flush=True)


def face_example(crop: np.ndarray, encoded_map: bytes, landmarks_3d: np.ndarray,
                 landmarks_2d: np.ndarray, pose: np.ndarray, transform: np.ndarray,
                 name: str, fitted_yaw: Optional[float] = None) -> dict[str, Any]:
  """One record of `face_features` from a float crop (0..255) and its ground truth; the yaw
  bucket from `fitted_yaw` (the .mat's yaw before wrapping, as the field buckets it) or the
  pose's yaw."""
  from prnet_jax.data import image_io, readers
  return {
      'image': image_io.encode_jpeg(np.clip(np.round(crop), 0, 255).astype(np.uint8)),
      'position_map': encoded_map,
      'landmarks_3d': np.asarray(landmarks_3d, np.float32),
      'landmarks_2d': np.asarray(landmarks_2d, np.float32),
      'pose': np.asarray(pose, np.float32),
      'crop_transform': np.asarray(transform, np.float32),
      'yaw_bucket': readers.yaw_bucket(float(pose[1] if fitted_yaw is None else fitted_yaw)),
      'file_name': name,
  }


class ManualFaceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of builders over files the user downloads: strict mode, worker processes, report."""

  def __init__(self, *, strict: bool = False, num_workers: Optional[int] = None, **kwargs):
    self._strict = strict
    self._num_workers = num_workers
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=face_features(),
                                          description=(self.__doc__ or '').split('\n')[0])

  def _generate(self, fn, items, initializer, initargs):
    from prnet_jax.data import readers
    self.report = readers.BuildReport(self.name, strict=self._strict)
    yield from generate(fn, items, self.report, self._num_workers, initializer, initargs)
