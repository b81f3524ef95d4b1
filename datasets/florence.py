"""`florence`: test views rendered from the Florence (MICC) 3D face scans.

Every subject's scan is rendered at the poses of
`prnet_jax.data.florence_views.FlorenceOptions` (default 27: yaw -80..80 in 20 deg steps x
pitch -15, 20, 25 deg), each view cropped around the nose tip like the official landmark crop. A record holds the view's image, the scan -> crop transform and
the ground-truth points (scan vertices within 95 mm of the nose tip). Configs: `default` and
`tiny` (2 views per subject, for tests).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from datasets import common

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put in the manual directory (default ~/tensorflow_datasets/downloads/manual/):

  Florence/  the MICC Florence 2D/3D Hybrid Face Dataset (Bagdanov et al. 2011; request it from
             the MICC lab, University of Florence): one folder per subject (subject_01, ...), each
             with its scans as .obj + .mtl + texture, e.g.
             subject_01/Model/frontal1/obj/110920150452.obj. The first .obj under a folder named
             'frontal1' is used (else the first .obj of the subject).

Then build:  python -m datasets.build florence --manual_dir=DIR [--data_dir=DIR]
"""


@dataclasses.dataclass
class FlorenceConfig(tfds.core.BuilderConfig):
  yaws_deg: tuple = (-80, -60, -40, -20, 0, 20, 40, 60, 80)
  pitches_deg: tuple = (-15, 20, 25)
  max_points: int = 30000


_OPTS = None


def _init(options) -> None:
  global _OPTS
  _OPTS = options


def find_scans(folder: str) -> list[tuple[str, str]]:
  """(subject, .obj path) per subject folder; prefers a scan under 'frontal1'."""
  out = []
  for subject in sorted(os.listdir(folder)):
    root = os.path.join(folder, subject)
    if not os.path.isdir(root):
      continue
    objs = sorted(glob.glob(os.path.join(root, '**', '*.obj'), recursive=True))
    if not objs:
      out.append((subject, os.path.join(root, '(no .obj found)')))
      continue
    frontal = [p for p in objs if 'frontal1' in p.split(os.sep)]
    out.append((subject, (frontal or objs)[0]))
  return out


def process_subject(item):
  """(subject, obj path) -> list of (key, example) for every view, or the SampleError."""
  from prnet_jax.data import florence_views, image_io, mesh_io, readers
  subject, path = item
  opts = _OPTS
  try:
    scan = mesh_io.load_obj(path)
    nose = florence_views.nose_tip(scan.vertices)
    gt = florence_views.ground_truth_points(scan, nose, opts)
    if len(gt) < 100:
      raise readers.SampleError(path, f'only {len(gt)} scan points within {opts.radius_mm} mm '
                                      f'of the nose tip: is the scan in millimetres, y up?')
    views = []
    for pitch in opts.pitches_deg:
      for yaw in opts.yaws_deg:
        t = florence_views.view_transform(nose, yaw, pitch, opts)
        image = florence_views.render_view(scan, t, opts)
        name = f'{subject}_yaw{yaw:+04.0f}_pitch{pitch:+03.0f}'
        views.append((name, {
            'image': image_io.encode_jpeg(image),
            'view_transform': t.astype(np.float32),
            'gt_points': gt,
            'nose_tip': nose.astype(np.float32),
            'yaw_deg': np.float32(yaw), 'pitch_deg': np.float32(pitch),
            'yaw_bucket': readers.yaw_bucket(np.deg2rad(yaw)),
            'subject': subject, 'file_name': name}))
  except readers.SampleError as e:
    return e
  return views


class Florence(common.ManualFaceBuilder):
  """Florence scans rendered at documented poses, with ground-truth points for ICP error."""

  name = 'florence'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Rendered views, nose-tip crops, 95 mm ground-truth points.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      FlorenceConfig(name='default', description='27 views per subject (VRN protocol).'),
      FlorenceConfig(name='tiny', description='2 views per subject, for tests.',
                     yaws_deg=(0, 60), pitches_deg=(20,), max_points=8000),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    from prnet_jax.data import florence_views
    # The options are recorded with the data, so evaluation reads them without this code.
    metadata = florence_views.options_to_metadata(options_of(self.builder_config))
    return self.dataset_info_from_configs(
        description=(self.__doc__ or '').split('\n')[0],
        metadata=tfds.core.MetadataDict(metadata),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Scalar(dtype=np.object_),
            'view_transform': tfds.features.Tensor(shape=(3, 4), dtype=np.float32),
            'gt_points': tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
            'nose_tip': tfds.features.Tensor(shape=(3,), dtype=np.float32),
            'yaw_deg': tfds.features.Scalar(dtype=np.float32),
            'pitch_deg': tfds.features.Scalar(dtype=np.float32),
            'yaw_bucket': tfds.features.Scalar(dtype=np.int32),
            'subject': tfds.features.Text(),
            'file_name': tfds.features.Text(),
        }))

  def _split_generators(self, dl_manager):
    folder = os.path.join(dl_manager.manual_dir, 'Florence')
    if not os.path.isdir(folder):
      raise FileNotFoundError(f'{folder} not found.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}')
    return {'test': self._generate_examples(find_scans(folder))}

  def _generate_examples(self, items):
    from prnet_jax.data import readers
    opts = options_of(self.builder_config)
    self.report = readers.BuildReport(self.name, strict=self._strict)
    for result in common.parallel_map(process_subject, items, self._num_workers, _init,
                                      (opts,)):
      if isinstance(result, readers.SampleError):
        self.report.skip(result)
        continue
      self.report.ok()
      yield from result
    print(self.report.summary(), flush=True)


def options_of(builder_config: Optional[FlorenceConfig]):
  """The FlorenceOptions a build uses."""
  from prnet_jax.data import florence_views
  if builder_config is None:
    return florence_views.FlorenceOptions()
  return florence_views.FlorenceOptions(yaws_deg=tuple(builder_config.yaws_deg),
                                        pitches_deg=tuple(builder_config.pitches_deg),
                                        max_points=builder_config.max_points)
