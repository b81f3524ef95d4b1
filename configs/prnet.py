r"""PRNet configs: the paper's recipe, and variants chosen by the argument after the colon.

Commands (from the repository root):

  # The model's per-layer table (any variant):
  python launch.py --config=configs/prnet.py --mode=summary
  python launch.py --config=configs/prnet.py:small --mode=summary

  # Training (lands with the training issue): paper recipe on 300W-LP, synthetic faces, CPU demo.
  python launch.py --config=configs/prnet.py --workdir=workdirs/prnet
  python launch.py --config=configs/prnet.py:synthetic --workdir=workdirs/synthetic
  python launch.py --config=configs/prnet.py:small --workdir=workdirs/small

Every field can be overridden, e.g. `--config.model.dtype=bfloat16 --config.batch_size=64`.

Variants:
  '' (default): the paper — full PRNet (256 px, width 16) on `prnet_300wlp`, Adam 1e-4 halved
      every 5 epochs, batch 16, L2 2e-4, augmentation as in the paper.
  synthetic: the same model and recipe on the embedded `synthetic_faces` dataset.
  small: a CPU-sized model (64 px, width 4) on `synthetic_faces`, for demos and tests.
"""

import ml_collections

VARIANTS = ('', 'synthetic', 'small')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  arg = (arg or '').strip()
  if arg not in VARIANTS:
    raise ValueError(f'Unknown config variant {arg!r}; choose one of {VARIANTS}')
  c = ml_collections.ConfigDict()
  c.variant = arg or 'paper'
  c.seed = 0

  # Network (prnet_jax.model.ModelConfig).
  c.model = ml_collections.ConfigDict(dict(resolution=256, width=16, dtype='float32'))

  # Data.
  c.dataset = 'prnet_300wlp'
  c.batch_size = 16  # global, over all hosts and devices
  c.num_epochs = 30  # not published; reimplementations train 20..100

  # Optimiser: Adam 1e-4, halved every 5 epochs; TF-style L2 2e-4 on all kernels in the loss.
  c.learning_rate = 1e-4
  c.lr_decay_every_epochs = 5
  c.lr_decay_factor = 0.5
  c.weight_decay = 2e-4

  # Augmentation (paper): rotation, translation (fraction of the input), scale, colour, occlusion.
  c.augment = ml_collections.ConfigDict(dict(
      rotation_deg=45.0, translation=0.1, scale=(0.9, 1.2), color=(0.6, 1.4), occlusion=True))

  if arg in ('synthetic', 'small'):
    c.dataset = 'synthetic_faces'
  if arg == 'small':
    c.model.resolution = 64
    c.model.width = 4
    c.batch_size = 32
    c.num_epochs = 5
    c.learning_rate = 1e-3
    c.lr_decay_every_epochs = 2
  return c
