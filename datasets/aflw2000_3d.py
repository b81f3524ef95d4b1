"""`aflw2000_3d`: the AFLW2000-3D evaluation set (2,000 images with fitted 3DMMs).

Each example is the official landmark crop (side 1.6 x the box of the 68 ground-truth
landmarks `pt3d_68`, resized to 256) with the landmarks in the crop frame, Pose_Para and the
|yaw| bucket (0: [0, 30], 1: (30, 60], 2: (60, 90] deg). With a BFM folder in the manual
directory the dense ground-truth position map (from Shape_Para / Exp_Para / Pose_Para, in
the same crop) is stored too; otherwise `position_map` is empty.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from datasets import common

CROP_SIZE = 256

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put in the manual directory (default ~/tensorflow_datasets/downloads/manual/):

  AFLW2000/  the AFLW2000-3D release (Zhu et al., CVPR 2016; linked from the 3DDFA project
             page as AFLW2000-3D.zip): image00002.jpg + image00002.mat, ... (pt3d_68, Pose_Para,
             Shape_Para, Exp_Para).
  BFM/       optional, for dense maps: BFM.mat + BFM_UV.mat, or the raw BFM with 3DDFA's files
             (see prnet_300wlp's instructions).

Then build:  python -m datasets.build aflw2000_3d --manual_dir=DIR [--data_dir=DIR]
"""

_BFM = None


def _init(bfm_dir: Optional[str]) -> None:
  global _BFM
  _BFM = None
  if bfm_dir:
    from prnet_jax.faces import face_model
    model = face_model.load_bfm_folder(bfm_dir)
    _BFM = (model, model.uv_renderer(CROP_SIZE))


def process_sample(item):
  """(image path, mat path, name) -> (key, example), or the SampleError."""
  from prnet_jax.data import image_io, posmap_codec, readers
  from prnet_jax.geometry import transforms
  image_path, mat_path, name = item
  try:
    fields = {'Pose_Para': (1, 7), 'pt3d_68': (3, 68)}
    if _BFM is not None:
      fields.update({'Shape_Para': None, 'Exp_Para': None})
    mat = readers.load_mat(mat_path, fields)
    pose = readers.check_pose(mat_path, mat['Pose_Para'])
    image = image_io.load_sample_image(image_path)
    pt3d = np.asarray(mat['pt3d_68'], np.float64).T  # (68, 3): x, y image pixels, z depth
    transform = transforms.crop_transform(transforms.landmark_crop(pt3d), CROP_SIZE)
    landmarks = transforms.transform_points(transform, pt3d)
    landmarks[:, 2] -= landmarks[:, 2].min()
    encoded_map = b''
    if _BFM is not None:
      model, renderer = _BFM
      vertices = model.vertices(mat['Shape_Para'], mat['Exp_Para'])
      image_vertices = transforms.to_image_frame(
          transforms.transform_3ddfa(vertices, pose[6], pose[:3], pose[3:6]), image.shape[0])
      positions = transforms.transform_points(transform, image_vertices)
      positions[:, 2] -= positions[:, 2].min()
      try:
        encoded_map = posmap_codec.encode(np.asarray(renderer(positions.astype(np.float32))))
      except posmap_codec.PosmapCodecError as e:
        raise readers.SampleError(mat_path, str(e)) from e
    crop = np.asarray(transforms.warp_image(image.astype(np.float32), transform, CROP_SIZE,
                                          CROP_SIZE))
  except readers.SampleError as e:
    return e
  return name, common.face_example(crop, encoded_map, landmarks, landmarks[:, :2], pose,
                                   transform, name,
                                   fitted_yaw=float(np.ravel(mat['Pose_Para'])[1]))


class Aflw20003d(common.ManualFaceBuilder):
  """AFLW2000-3D crops with 68 3D landmarks, pose, yaw bucket (and dense maps with BFM)."""

  name = 'aflw2000_3d'
  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {'1.0.0': 'Landmark crops (1.6x), yaw buckets, optional dense maps.',
                   '1.1.0': ('Records: position maps as PM2 (byte planes, zstd), the same '
                             'values in half the decode time.'),
                   '1.2.0': ('Records: position maps as PM3 (zigzag residuals): the same values,'
                             ' 2/3 of the bytes, half the decode time.')}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _split_generators(self, dl_manager):
    from prnet_jax.data import readers
    folder = os.path.join(dl_manager.manual_dir, 'AFLW2000')
    if not os.path.isdir(folder):
      raise FileNotFoundError(f'{folder} not found.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}')
    bfm = os.path.join(dl_manager.manual_dir, 'BFM')
    from prnet_jax.faces import bfm_generate
    bfm = (bfm if os.path.isfile(os.path.join(bfm, 'BFM.mat')) or bfm_generate.has_raw_bfm(bfm)
           else None)
    items = [(img, mat, os.path.splitext(os.path.basename(mat))[0])
             for img, mat in readers.find_pairs(folder)]
    return {'test': self._generate_examples(items, bfm)}

  def _generate_examples(self, items, bfm_dir):
    yield from self._generate(process_sample, items, _init, (bfm_dir,))
