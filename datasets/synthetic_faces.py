"""`synthetic_faces`: the embedded face worlds as a TFDS dataset (no downloads).

Configs of the procedural world (`synthetic.SyntheticWorld`): `default` (256 px, 4,000 train /
200 test), `small` (64 px, 2,000 / 200, for the CPU demo) and `tiny` (64 px, 64 / 16, for tests).
Configs of the ICT world (`ict_world.ICTWorld`, faces rendered toward photographs): `ict`
(256 px, 20,000 / 500), `ict_128` (128 px, 32,000 / 500: the bundled pretrained model's
data), `ict_small` (128 px, 4,000 / 200) and `ict_tiny` (64 px, 16 / 8, for
tests). Size and seed are configurable by making a `SyntheticFacesConfig`. Sample i of the train
split is the world's sample of seed + i; test samples use seeds offset by 10^8. The ICT world
renders batches of `ICT_BATCH` seeds in each worker process.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from datasets import common

TEST_SEED_OFFSET = 10 ** 8


@dataclasses.dataclass
class SyntheticFacesConfig(tfds.core.BuilderConfig):
  image_size: int = 256
  num_train: int = 4000
  num_test: int = 200
  seed: int = 0
  world: str = 'procedural'  # or an ICT layout: 'ict', 'ict_bfm68' (`ict_face.LAYOUTS`)


_WORLD = None
ICT_BATCH = 8


def _init_world(image_size: int, world: str = 'procedural') -> None:
  global _WORLD
  from prnet_jax.faces import ict_face
  if world in ict_face.LAYOUTS:
    import dataclasses as dc

    from prnet_jax.worlds.ict_world import ICTWorld, ICTWorldConfig
    _WORLD = ICTWorld(dc.replace(ICTWorldConfig(), image_size=image_size,
                                 uv_resolution=image_size, layout=world))
  elif world == 'procedural':
    from prnet_jax.worlds.procedural_world import SyntheticWorld
    _WORLD = SyntheticWorld(image_size=image_size, uv_resolution=image_size)
  else:
    raise ValueError(f"unknown world {world!r}: 'procedural' or one of {tuple(ict_face.LAYOUTS)}")


def _example(seed: int):
  return _record(_WORLD.sample(seed))


def _examples(seeds):
  return [_record(s) for s in _WORLD.sample_batch(seeds)]


def _record(s):
  from prnet_jax.data import image_io, posmap_codec, readers
  seed = s.seed
  return f'{seed:09d}', {
      'image': image_io.encode_jpeg(s.image),
      'position_map': posmap_codec.encode(s.position_map),
      'landmarks_3d': s.landmarks,
      'landmarks_2d': s.landmarks[:, :2],
      'pose': s.pose,
      'crop_transform': s.crop_transform.astype(np.float32),
      'yaw_bucket': readers.yaw_bucket(float(s.pose[1])),
      'file_name': f'synthetic/{seed:09d}',
  }


class SyntheticFaces(tfds.core.GeneratorBasedBuilder):
  """Synthetic faces with exact position maps, landmarks and poses."""

  VERSION = tfds.core.Version('1.5.0')
  RELEASE_NOTES = {'1.0.0': 'Procedural face model, 300W-LP-style crops.',
                   '1.1.0': 'ICT world: plain backdrops (black, white, grey, muted colours).',
                   '1.2.0': 'ICT world: the 68 landmarks are the BFM-68 points (as 300W-LP '
                            'and AFLW2000-3D define them) on the ICT surface.',
                   '1.3.0': ('Records: position maps as PM2 (byte planes, zstd), the same '
                             'values in half the decode time.'),
                   '1.4.0': ('Records: position maps as PM3 (zigzag residuals): the same values,'
                             ' 2/3 of the bytes, half the decode time.'),
                   '1.5.0': ("ICT world, 'ict' layout: the jaw's 17 landmarks are the BFM-68 "
                             "points on ICT's skin, read from the face pixels around them "
                             '(`prnet_jax.faces.landmark_taps`); images and maps unchanged.')}
  BUILDER_CONFIGS = [
      SyntheticFacesConfig(name='default', description='256 px, 4000 train / 200 test'),
      SyntheticFacesConfig(name='small', description='64 px, 2000 train / 200 test (CPU demo)',
                           image_size=64, num_train=2000, num_test=200),
      SyntheticFacesConfig(name='tiny', description='64 px, 64 train / 16 test (tests)',
                           image_size=64, num_train=64, num_test=16),
      SyntheticFacesConfig(name='ict', description='ICT world, 256 px, 20000 train / 500 test',
                           world='ict', num_train=20000, num_test=500),
      SyntheticFacesConfig(name='ict_128', world='ict', image_size=128, num_train=32000,
                           num_test=500, description='ICT world, 128 px, 32000 train / 500 '
                           'test (the pretrained model\'s data)'),
      SyntheticFacesConfig(name='ict_small', world='ict', image_size=128, num_train=4000,
                           num_test=200, description='ICT world, 128 px, 4000 train / 200 test'),
      SyntheticFacesConfig(name='ict_tiny', world='ict', image_size=64, num_train=16,
                           num_test=8, description='ICT world, 64 px, 16 train / 8 test (tests)'),
      SyntheticFacesConfig(name='ict_bfm68_128', world='ict_bfm68', image_size=128,
                           num_train=32000, num_test=500, description='ICT world in the '
                           "'ict_bfm68' layout (the map holds the benchmark's whole jaw), 128 px, "
                           '32000 train / 500 test'),
      SyntheticFacesConfig(name='ict_bfm68_tiny', world='ict_bfm68', image_size=64,
                           num_train=16, num_test=8, description="ICT world in the 'ict_bfm68' "
                           'layout, 64 px, 16 train / 8 test (tests)'),
  ]

  def __init__(self, *, num_workers: Optional[int] = None, **kwargs):
    self._num_workers = num_workers
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=common.face_features(), supervised_keys=None,
        description=__doc__.split('\n')[0])

  def _split_generators(self, dl_manager):
    c = self.builder_config
    return {'train': self._generate_examples(range(c.seed, c.seed + c.num_train)),
            'test': self._generate_examples(range(c.seed + TEST_SEED_OFFSET,
                                                   c.seed + TEST_SEED_OFFSET + c.num_test))}

  def _generate_examples(self, seeds):
    c = self.builder_config
    initargs = (c.image_size, c.world)
    if c.world == 'procedural':
      yield from common.parallel_map(_example, list(seeds), self._num_workers,
                                     initializer=_init_world, initargs=initargs)
      return
    seeds = list(seeds)
    chunks = [seeds[k:k + ICT_BATCH] for k in range(0, len(seeds), ICT_BATCH)]
    for examples in common.parallel_map(_examples, chunks, self._num_workers,
                                        initializer=_init_world, initargs=initargs):
      yield from examples
