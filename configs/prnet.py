r"""PRNet configs: the paper's recipe, and variants chosen by the argument after the colon.

Commands (from the repository root):

  # The bundled pretrained model's run (~85 min on 2 cores; then python -m prnet_jax.training.pretrained
  # --workdir=workdirs/ict packages it):
  python launch.py --config=configs/prnet.py:ict --workdir=workdirs/ict
  # CPU demo on the embedded synthetic faces (builds the data on first use, ~5 min on 2 cores):
  python launch.py --config=configs/prnet.py:small --workdir=workdirs/small
  # The full model on synthetic faces (256 px):
  python launch.py --config=configs/prnet.py:synthetic --workdir=workdirs/synthetic
  # The paper's recipe on 300W-LP (build it first: python -m datasets.build prnet_300wlp
  # --manual_dir=DIR) with the official UV assets:
  python launch.py --config=configs/prnet.py --workdir=workdirs/prnet
  # Evaluate the newest checkpoint of a run (JSON, table and plots in WORKDIR/eval/):
  python launch.py --config=configs/prnet.py:small --workdir=workdirs/small --mode=eval
  # ... the paper's protocol on AFLW2000-3D with converted official weights:
  python launch.py --config=configs/prnet.py --mode=eval --workdir=workdirs/official \
      --checkpoint=workdirs/official-ckpt --config.eval.dataset=aflw2000_3d
  # The model's per-layer table (any variant):
  python launch.py --config=configs/prnet.py --mode=summary

Every field can be overridden, e.g. `--config.model.dtype=bfloat16 --config.batch_size=64`.

Variants:
  '' (default): the paper — full PRNet (256 px, width 16) on `prnet_300wlp`, Adam 1e-4 halved
      every 5 epochs, batch 16, L2 2e-4 on kernels, augmentation as in the paper.
  synthetic: the same model and recipe on the embedded `synthetic_faces` dataset.
  small: a CPU-sized model (64 px, width 4) on the ICT face world (`synthetic_faces/ict_small`,
      UV assets 'ict'), the quick start (1500 steps, lighter augmentation and L2 so that it
      learns within minutes). Tests that train it on the procedural world's `synthetic_faces/tiny`
      set `uv_assets='procedural'` with it.
  ict: the bundled pretrained model's recipe (`prnet_jax.training.pretrained`): 64 px, width 8 on
      `synthetic_faces/ict_128` (32k ICT-world faces at 128 px, resized on loading; UV assets
      'ict'), 40k steps of batch 16 (20 epochs), Adam 1e-3 with warm-up and cosine decay, L2
      1e-5, the paper's augmentation plus grayscale, blur and noise (for photographs). ~80 min
      on a 2-core CPU. Why this size: on that CPU the full network at 256 px trains at ~6
      images/s, width 8 at 128 px at ~60 and at 64 px at ~130 (BENCHMARKS.md); at 128 px the
      network was still far from fitting the world after 64k images (held-out NME 17.5%), so
      the 2 hours buy more images instead of more pixels. Photos are low-passed before their
      crop shrinks them (`predict_antialias`), like the renders it saw.
  gpu, tpu: the paper's model and data for accelerators: bfloat16 compute with float32
      parameters and BatchNorm statistics, global batch 128 (one GPU) or 1024 (a TPU host of 8
      chips, 128 each; multiply by the device count elsewhere: --config.batch_size), Adam at
      1e-4 x sqrt(batch / 16) with 500 warm-up steps and the paper's halving every 5 epochs,
      16 or 32 grain decode processes. Memory per device: docs/training.md. Not yet validated
      by a run on an accelerator (`python -m prnet_jax.training.lowering` checks that they
      lower for cuda and tpu on any machine).
  ict_bfm68: the same recipe on `synthetic_faces/ict_bfm68_128`, the ICT world in the UV layout
      fitted to the benchmark's BFM-68 landmarks (UV assets 'ict_bfm68'; its landmark floor on
      the AFLW2000-3D development half is 2.26%; the 'ict' layout's, whose jaw is read from the
      face around it, 2.35%). On that half its model scored 10.03% alone (official crops) and
      6.11% with its framing and landmark correction (cross-validated), where the bundled 'ict'
      model scores 10.02% and 5.72% (docs/pretrained_model.md).
"""

import ml_collections

VARIANTS = ('', 'synthetic', 'small', 'ict', 'ict_bfm68', 'gpu', 'tpu')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  arg = (arg or '').strip()
  if arg not in VARIANTS:
    raise ValueError(f'Unknown config variant {arg!r}; choose one of {VARIANTS}')
  c = ml_collections.ConfigDict()
  c.variant = arg or 'paper'
  c.seed = 0

  # Network (prnet_jax.nn.model.ModelConfig).
  # impl: 'fast' or 'reference' computes the same function (prnet_jax.nn.conv_ops, batchnorm).
  c.model = ml_collections.ConfigDict(dict(resolution=256, width=16, dtype='float32',
                                           bn_momentum=0.999, impl='fast'))

  # Data: a TFDS name ('dataset[/config]'), its directory ('' = TFDS default) and the UV
  # assets giving the loss weights and landmarks ('official': PRNet's uv-data, shipped;
  # 'procedural', 'ict', 'ict_bfm68': the embedded worlds' layouts; or a uv-data folder).
  c.dataset = 'prnet_300wlp'
  c.data_dir = ''
  c.uv_assets = 'official'
  c.worker_count = 0  # grain decode processes (0: a prefetch thread)
  c.batch_size = 16   # global, over all hosts and devices
  c.num_epochs = 30   # not published; reimplementations train 20..100
  c.num_train_steps = 0  # > 0 overrides num_epochs

  # Optimiser: Adam 1e-4, halved every 5 epochs; TF-style L2 2e-4 on all kernels in the loss.
  c.optimizer = 'adam'  # or 'sgd' (momentum 0.9)
  c.learning_rate = 1e-4
  c.lr_decay_every_epochs = 5
  c.lr_decay_factor = 0.5
  c.lr_schedule = 'step'  # or 'cosine': warm-up over warmup_steps, then to 1% at the last step
  c.warmup_steps = 0
  c.weight_decay = 2e-4

  # Augmentation (paper): rotation, translation (fraction of the input), scale, colour, occlusion.
  c.augment = ml_collections.ConfigDict(dict(
      rotation_deg=45.0, translation=0.1, scale=(0.9, 1.2), color=(0.6, 1.4), occlusion=True))

  # Devices: data parallel over all devices; mesh.fsdp > 1 also shards parameters.
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1))

  # Loop.
  c.log_every = 100
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.eval_every = 0  # > 0: evaluate on eval_split every so many steps
  c.eval_split = 'test'
  # Prediction: low-pass a photo before its crop shrinks it (models trained on renders).
  c.predict_antialias = False
  # ... and re-crop detector/box crops around the predicted landmarks so many times.
  c.predict_refine = 0
  # ... and one more pass in a crop turned upright by the face's in-plane angle; and landmarks
  # averaged with those of the mirrored crop (prnet_jax.serving.inference.Predictor).
  c.predict_upright = False
  c.predict_flip = False

  # Evaluation (--mode=eval and the periodic hook; prnet_jax.evaluation.evaluate / prnet_jax.evaluation.metrics):
  # dataset '' = the training dataset; NME normaliser 'box' (sqrt(w*h) of the ground-truth 2D
  # landmark box: the paper's 2D protocol) or 'diag'; dense normaliser 'box' or 'face_box' (the
  # box of the ground-truth face pixels, the PyTorch port's); 3D z alignment 'mean' (the PyTorch
  # port's), 'min' (how 2DASL scored PRNet) or 'none'; AUC of the CED up to 7%.
  c.eval = ml_collections.ConfigDict(dict(
      dataset='', split='test', norm='box', dense_norm='box', z_align='mean',
      auc_threshold=0.07, batch_size=16, max_examples=0))

  if arg in ('synthetic', 'small'):
    c.dataset = 'synthetic_faces'
    c.uv_assets = 'procedural'
    c.eval_every = 2000
  if arg == 'small':
    c.dataset = 'synthetic_faces/ict_small'
    c.uv_assets = 'ict'
    c.model.resolution = 64
    c.model.width = 4
    c.model.bn_momentum = 0.99  # ~1k steps: moving statistics must converge within the run
    c.batch_size = 16
    c.num_epochs = 0
    c.num_train_steps = 1500
    c.learning_rate = 2e-3
    c.lr_decay_every_epochs = 8
    # A 0.8M-parameter net sees 12 epochs: the paper's L2 (2e-4) was half of its loss and its
    # augmentation too hard to learn in minutes (held-out NME 21% vs 14% with these; measured).
    c.weight_decay = 1e-5
    c.augment = ml_collections.ConfigDict(dict(
        rotation_deg=10.0, translation=0.05, scale=(0.95, 1.05), color=(0.8, 1.2),
        occlusion=False))
    c.log_every = 50
    c.checkpoint_every = 300
    c.eval_every = 300
  if arg in ('ict', 'ict_bfm68'):
    c.dataset = f'synthetic_faces/{arg}_128'
    c.uv_assets = arg
    c.model.resolution = 64
    c.model.width = 8
    c.model.bn_momentum = 0.99
    c.batch_size = 16
    c.num_epochs = 0
    c.num_train_steps = 40000
    c.learning_rate = 1e-3
    c.lr_schedule = 'cosine'
    c.warmup_steps = 500
    c.weight_decay = 1e-5
    c.augment = ml_collections.ConfigDict(dict(
        rotation_deg=30.0, translation=0.1, scale=(0.9, 1.2), color=(0.6, 1.4),
        occlusion=True, grayscale_prob=0.1, blur_prob=0.3, blur_sigma=(0.4, 1.5),
        noise_std=0.04))
    c.log_every = 100
    c.checkpoint_every = 4000
    c.eval_every = 4000
    c.predict_antialias = True
    c.predict_refine = 1  # it learned from landmark crops; Haar boxes frame faces otherwise
    # Test-time passes measured on the AFLW2000-3D development half (docs/pretrained_model.md):
    # an upright re-crop (10.86 -> 10.69%) and flip averaging (-> 10.18%; both: 10.03%).
    c.predict_upright = True
    c.predict_flip = True
  if arg in ('gpu', 'tpu'):
    # The paper's model and data on accelerators: bfloat16 compute (float32 parameters, Adam
    # moments and BatchNorm statistics), a large global batch, the paper's step decay with the
    # learning rate scaled by the square root of the batch (and a warm-up for it), grain
    # decode processes to feed the chips. Not yet validated by a run on an accelerator.
    per_device = 128
    devices = 1 if arg == 'gpu' else 8   # one GPU; a TPU v4-8 / v5e-8 host
    c.model.dtype = 'bfloat16'
    c.batch_size = per_device * devices  # global: x the device count for other slices
    c.learning_rate = 1e-4 * (c.batch_size / 16) ** 0.5
    c.warmup_steps = 500
    c.worker_count = 16 if arg == 'gpu' else 32
    c.eval.batch_size = 256 if arg == 'gpu' else 1024
    c.log_every = 50
    c.checkpoint_every = 500
  return c
