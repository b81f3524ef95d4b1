"""`prnet_300wlp`: 300W-LP with PRNet position-map ground truth (face3d's procedure).

Manual download (see MANUAL_DOWNLOAD_INSTRUCTIONS). For every `<subset>/<name>.jpg` + `.mat`
the 3DMM fit (Shape_Para, Exp_Para, Pose_Para) is turned into a mesh with the Basel Face Model,
cropped around its 68 landmarks (x 1.5, randomly perturbed with a per-file seed) and rendered
into UV space (`prnet_jax.geometry.transforms.position_map_from_3dmm`). Broken samples are reported and
skipped (or stop the build with `strict=True`).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds

from datasets import common

SUBSETS = ('AFW', 'HELEN', 'IBUG', 'LFPW', 'AFW_Flip', 'HELEN_Flip', 'IBUG_Flip', 'LFPW_Flip')
CROP_SIZE = 256

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put two folders in the manual directory (default ~/tensorflow_datasets/downloads/manual/):

  300W_LP/  the 300W-LP release (Zhu et al., "Face Alignment Across Large Poses", CVPR 2016;
            the 3DDFA project page links the archive 300W-LP.zip): the subsets AFW, HELEN,
            IBUG, LFPW and their *_Flip twins, each with <name>.jpg + <name>.mat
            (Pose_Para, Shape_Para, Exp_Para, pt2d). The `landmarks/` folder is not needed.
  BFM/      either BFM.mat and BFM_UV.mat as produced by face3d (github.com/YadiraF/face3d,
            examples/Data/BFM), or the files its generate script reads, in its layout:
            raw/01_MorphableModel.mat (the Basel Face Model 2009, which you request from the
            University of Basel), 3ddfa/model_info.mat, Model_Expression.mat,
            Model_tri_mouth.mat (3DDFA) and stn/BFM_UV.mat (3DMMasSTN). No MATLAB is needed:
            python -m prnet_jax.faces.bfm_generate BFM BFM writes BFM.mat once (faster than
            converting in every build worker, which happens otherwise).

Then build:  python -m datasets.build prnet_300wlp --manual_dir=DIR [--data_dir=DIR]
"""

_BFM = None


def _init_bfm(bfm_dir: str) -> None:
  global _BFM
  from prnet_jax.faces import face_model
  model = face_model.load_bfm_folder(bfm_dir)
  _BFM = (model, model.uv_renderer(CROP_SIZE))


def file_seed(name: str) -> int:
  """A stable per-file seed (for the crop perturbation) from its relative name."""
  return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], 'little')


def process_sample(item):
  """(image path, mat path, relative name) -> (key, example) or SampleError (returned, so
  that a worker process never dies on one bad file)."""
  from prnet_jax.data import image_io, posmap_codec, readers
  from prnet_jax.geometry import transforms
  image_path, mat_path, name = item
  try:
    mat = readers.load_mat(mat_path, {'Pose_Para': (1, 7), 'Shape_Para': None,
                                      'Exp_Para': None, 'pt2d': None})
    pose = readers.check_pose(mat_path, mat['Pose_Para'])
    image = image_io.load_sample_image(image_path)
    model, renderer = _BFM
    if mat['Shape_Para'].size != model.shape_basis.shape[1]:
      raise readers.SampleError(mat_path, f'Shape_Para has {mat["Shape_Para"].size} values, '
                                f'the BFM has {model.shape_basis.shape[1]} components')
    if mat['Exp_Para'].size != model.exp_basis.shape[1]:
      raise readers.SampleError(mat_path, f'Exp_Para has {mat["Exp_Para"].size} values, '
                                f'the BFM has {model.exp_basis.shape[1]} components')
    pt2d = np.asarray(mat['pt2d'], np.float64)
    if pt2d.shape != (2, 68):
      raise readers.SampleError(mat_path, f'pt2d has shape {pt2d.shape}, expected (2, 68)')
    vertices = model.vertices(mat['Shape_Para'], mat['Exp_Para'])
    rng = np.random.default_rng(file_seed(name))
    gt = transforms.position_map_from_3dmm(vertices, pose, image.shape[0], model.landmarks,
                                         CROP_SIZE, transforms.random_perturbation(rng))
    pos_map = np.asarray(renderer(gt.positions.astype(np.float32)))
    crop = np.asarray(transforms.warp_image(image.astype(np.float32), gt.transform, CROP_SIZE,
                                          CROP_SIZE))
    try:
      encoded_map = posmap_codec.encode(pos_map)
    except posmap_codec.PosmapCodecError as e:
      raise readers.SampleError(mat_path, str(e)) from e
  except readers.SampleError as e:
    return e
  return name, common.face_example(
      crop, encoded_map, gt.positions[model.landmarks],
      transforms.transform_points(gt.transform, pt2d.T), pose, gt.transform, name)


class Prnet300wlp(common.ManualFaceBuilder):
  """300W-LP face crops with PRNet UV position maps."""

  name = 'prnet_300wlp'
  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {'1.0.0': 'face3d 300W-LP procedure, all eight subsets.',
                   '1.1.0': ('Records: position maps as PM2 (byte planes, zstd), the same '
                             'values in half the decode time.'),
                   '1.2.0': ('Records: position maps as PM3 (zigzag residuals): the same values,'
                             ' 2/3 of the bytes, half the decode time.')}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _split_generators(self, dl_manager):
    root = os.path.join(dl_manager.manual_dir, '300W_LP')
    bfm = os.path.join(dl_manager.manual_dir, 'BFM')
    from prnet_jax.faces import bfm_generate
    needs = [(root, '300W_LP/')]
    if not bfm_generate.has_raw_bfm(bfm):
      needs += [(os.path.join(bfm, 'BFM.mat'), 'BFM/BFM.mat'),
                (os.path.join(bfm, 'BFM_UV.mat'), 'BFM/BFM_UV.mat')]
    for path, what in needs:
      if not os.path.exists(path):
        raise FileNotFoundError(f'{path} not found: the manual directory needs {what}.\n'
                                f'{MANUAL_DOWNLOAD_INSTRUCTIONS}')
    from prnet_jax.data import readers
    items = []
    for subset in SUBSETS:
      folder = os.path.join(root, subset)
      if not os.path.isdir(folder):
        print(f'[prnet_300wlp] subset {subset}/ not found in {root}; skipping it', flush=True)
        continue
      items += [(img, mat, f'{subset}/{os.path.splitext(os.path.basename(mat))[0]}')
                for img, mat in readers.find_pairs(folder)]
    if not items:
      raise FileNotFoundError(f'{root} holds none of the subsets {SUBSETS}')
    return {'train': self._generate_examples(items, bfm)}

  def _generate_examples(self, items, bfm_dir):
    yield from self._generate(process_sample, items, _init_bfm, (bfm_dir,))
