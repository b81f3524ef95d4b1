"""Reading real dataset files with checks, and the build report of skipped samples.

Every problem with one sample raises `SampleError(path, reason)`; dataset builders catch it,
record it in a `BuildReport` (file name and reason, counted in the summary) and skip the sample,
or, when strict, stop the build with that message. Nothing good is dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Mapping, Optional, Sequence

import numpy as np


class SampleError(Exception):
  """One sample cannot be used: `path` names the file, `reason` says why."""

  def __init__(self, path: str, reason: str):
    super().__init__(f'{path}: {reason}')
    self.path = path
    self.reason = reason

  def __reduce__(self):
    # Builds raise it in worker processes: it must cross back intact (the default pickling
    # calls SampleError(message), which fails and kills the build).
    return type(self), (self.path, self.reason)


def load_mat(path: str, fields: Mapping[str, Optional[tuple[int, ...]]]) -> dict[str, np.ndarray]:
  """Reads a MATLAB file and checks each required field's presence, shape (None: any) and
  finiteness."""
  from scipy import io as sio
  if not os.path.isfile(path):
    raise SampleError(path, '.mat file missing')
  try:
    data = sio.loadmat(path)
  except Exception as e:  # truncated / not a mat file: scipy raises several types
    raise SampleError(path, f'cannot read .mat ({type(e).__name__}: {e})') from e
  out = {}
  for name, shape in fields.items():
    if name not in data:
      raise SampleError(path, f'.mat lacks field {name!r}')
    value = np.asarray(data[name])
    if shape is not None and value.shape != tuple(shape):
      raise SampleError(path, f'field {name!r} has shape {value.shape}, expected {tuple(shape)}')
    if value.dtype.kind in 'fc' and not np.all(np.isfinite(value)):
      raise SampleError(path, f'field {name!r} contains NaN or inf')
    out[name] = value
  return out


def wrap_angles(angles):
  """Angles (radians) wrapped into (-pi, pi]: the same rotation (a few AFLW2000-3D fits have a
  yaw of e.g. -351.2 degrees)."""
  a = np.asarray(angles, np.float64)
  return np.pi - np.mod(np.pi - a, 2 * np.pi)


def check_pose(path: str, pose: np.ndarray) -> np.ndarray:
  """Pose_Para (7,) checked (finite, positive scale), its three angles wrapped into (-pi, pi]."""
  pose = np.asarray(pose, np.float64).reshape(-1)
  if pose.shape != (7,):
    raise SampleError(path, f'Pose_Para has {pose.size} values, expected 7')
  if not np.all(np.isfinite(pose)):
    raise SampleError(path, f'Pose_Para {pose} is not finite')
  if not pose[6] > 0:
    raise SampleError(path, f'Pose_Para scale {pose[6]} is not positive')
  return np.concatenate([wrap_angles(pose[:3]), pose[3:]])


@dataclasses.dataclass
class BuildReport:
  """Skipped samples of a dataset build (file name and reason), with a summary."""
  name: str
  strict: bool = False
  processed: int = 0
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

  def ok(self) -> None:
    self.processed += 1

  def skip(self, error: SampleError) -> None:
    """Records a bad sample; in strict mode stops the build with its message."""
    self.processed += 1
    if self.strict:
      raise SampleError(error.path, f'{error.reason} (strict build: stopping)') from error
    self.skipped.append((error.path, error.reason))
    print(f'[{self.name}] skipped {error.path}: {error.reason}', flush=True)

  def summary(self) -> str:
    kept = self.processed - len(self.skipped)
    lines = [f'[{self.name}] {kept} of {self.processed} samples kept, '
             f'{len(self.skipped)} skipped']
    reasons = collections.Counter(r.split(' (')[0] for _, r in self.skipped)
    lines += [f'  {n} x {reason}' for reason, n in reasons.most_common()]
    return '\n'.join(lines)


def find_pairs(folder: str, image_exts: Sequence[str] = ('.jpg', '.jpeg', '.png')
               ) -> list[tuple[str, str]]:
  """Sorted (image path, .mat path) pairs by stem; a .mat without an image (or the reverse)
  still appears, so the loader reports the missing file."""
  stems: dict[str, dict[str, str]] = collections.defaultdict(dict)
  for name in os.listdir(folder):
    stem, ext = os.path.splitext(name)
    if ext.lower() in image_exts:
      stems[stem]['image'] = os.path.join(folder, name)
    elif ext.lower() == '.mat':
      stems[stem]['mat'] = os.path.join(folder, name)
  return [(d.get('image', os.path.join(folder, stem + image_exts[0])),
           d.get('mat', os.path.join(folder, stem + '.mat'))) for stem, d in sorted(stems.items())]


def yaw_bucket(yaw_radians):
  """|yaw| bucket of the AFLW2000-3D protocol: 0 = [0, 30], 1 = (30, 60], 2 = (60, 90+] deg,
  of the yaw as the fit gives it, as the field's evaluation code computes it (3DDFA,
  SynergyNet, 2DASL: the absolute value of Pose_Para's yaw, unwrapped, so a fit at -351.2 deg
  counts in the last bucket). A scalar gives an int, an array an int32 array."""
  a = np.abs(np.rad2deg(np.asarray(yaw_radians, np.float64)))
  b = np.where(a <= 30, 0, np.where(a <= 60, 1, 2)).astype(np.int32)
  return int(b) if b.ndim == 0 else b

