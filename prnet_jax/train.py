"""Training: `train_and_evaluate(config, workdir)`, on any number of devices and hosts.

Stages, top to bottom: mesh -> data -> model and loss -> sharded state -> checkpoint (resume)
-> jitted step -> loop (progress, metrics, evaluation, checkpoints, preemption).

One `jax.jit` step with `NamedSharding`s: the batch is split over every device, parameters are
replicated (or sharded along the 'fsdp' mesh axis), BatchNorm statistics are reduced over the
global batch by XLA, augmentation runs inside the step, keyed by `fold_in(rng, step)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from prnet_jax import augment, input_pipeline, losses
from prnet_jax.checkpointing import MODEL_CONFIG, VARIABLES
from prnet_jax.model import ModelConfig, PRNet, init_variables
from prnet_jax.uv_assets import UVAssets, load_uv_assets

TRAIN, DATA_ITER = 'train', 'data_iter'


class TrainingError(RuntimeError):
  pass


@flax.struct.dataclass
class TrainState:
  step: jax.Array      # int32 scalar
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array       # raw key data (uint32), so that it checkpoints like any array


# ------------------------------------------------------------------------------------ mesh

def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """('data', 'fsdp') mesh over all devices; fsdp = config.mesh.fsdp (1: pure data parallel)."""
  fsdp = int(config.get('mesh', {}).get('fsdp', 1))
  n = jax.device_count()
  if n % fsdp:
    raise ValueError(f'{n} devices cannot be split into fsdp groups of {fsdp}')
  # Auto axes: XLA propagates shardings from the inputs (the step stays sharding-agnostic).
  return jax.make_mesh((n // fsdp, fsdp), ('data', 'fsdp'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(('data', 'fsdp')))


def param_sharding(mesh, leaf) -> NamedSharding:
  """FSDP rule: shard the last axis over 'fsdp' when divisible and large; else replicate."""
  fsdp = mesh.shape['fsdp']
  shape = getattr(leaf, 'shape', ())
  if fsdp > 1 and len(shape) >= 2 and shape[-1] % fsdp == 0 and np.prod(shape) >= 2 ** 14:
    return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), 'fsdp'))
  return NamedSharding(mesh, P())


# ------------------------------------------------------------------------------------ data

def uv_assets_for(config, resolution: int) -> UVAssets:
  """Loss weights and landmark positions: 'procedural' (the embedded model) or an official-
  format uv-data folder (e.g. PRNet's Data/uv-data)."""
  if config.uv_assets == 'procedural':
    from prnet_jax.face_model import derive_uv_assets
    from prnet_jax.procedural_face import procedural_face_model
    return derive_uv_assets(procedural_face_model(), resolution)
  if not config.uv_assets:
    raise TrainingError('config.uv_assets is empty: set it to an official uv-data folder '
                        '(PRNet/Data/uv-data) or to "procedural" for synthetic data')
  assets = load_uv_assets(config.uv_assets)
  if assets.resolution != resolution:
    raise TrainingError(f'{config.uv_assets} is for {assets.resolution} px maps, the model '
                        f'is {resolution} px')
  return assets


def prepare_data(config, build_if_missing: bool):
  try:
    return input_pipeline.data_source(config.dataset, 'train', config.data_dir or None)
  except input_pipeline.DatasetNotFoundError as e:
    if not (build_if_missing and config.dataset.startswith('synthetic_faces')):
      raise TrainingError(
          f'{e}\n\nTo try the pipeline without downloads, train on synthetic faces instead:\n'
          f'  python launch.py --config=configs/prnet.py:small --workdir=workdirs/small') from e
  print(f'building {config.dataset} (first run only) ...', flush=True)
  from datasets import build as build_lib
  build_lib.build(config.dataset, data_dir=config.data_dir or None)
  return input_pipeline.data_source(config.dataset, 'train', config.data_dir or None)


# ------------------------------------------------------------------------------------ step

def make_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """Learning rate multiplied by `lr_decay_factor` every `lr_decay_every_epochs`."""
  return optax.exponential_decay(
      config.learning_rate, transition_steps=config.lr_decay_every_epochs * steps_per_epoch,
      decay_rate=config.lr_decay_factor, staircase=True)


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam (the paper) or SGD with momentum 0.9 (`config.optimizer`) on `make_schedule`."""
  schedule = make_schedule(config, steps_per_epoch)
  name = config.get('optimizer', 'adam')
  if name == 'adam':
    return optax.adam(schedule)
  if name == 'sgd':
    return optax.sgd(schedule, momentum=0.9)
  raise ValueError(f"config.optimizer must be 'adam' or 'sgd', got {name!r}")


def make_loss_fn(model: PRNet, weights: jax.Array, aug: augment.AugmentConfig,
                 weight_decay: float):
  """(params, state, batch) -> (total loss, (data loss, new batch_stats)), augmentation keyed
  by fold_in(state.rng, state.step)."""
  def loss_fn(params, state: TrainState, batch):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    images = batch['image'].astype(jnp.float32) / 255.0
    images, targets = augment.augment_batch(key, images, batch['position_map'], aug)
    out, updates = model.apply({'params': params, 'batch_stats': state.batch_stats}, images,
                               train=True, mutable=['batch_stats'])
    data_loss = losses.position_map_loss(out, targets, weights, model.max_pos)
    total = data_loss + losses.l2_weight_decay(params, weight_decay)
    return total, (data_loss, updates['batch_stats'])
  return loss_fn


def make_train_step(loss_fn, tx):
  def train_step(state: TrainState, batch):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (total, (data_loss, stats)), grads = grad_fn(state.params, state, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        batch_stats=stats, opt_state=opt_state)
    return new, {'loss': total, 'data_loss': data_loss}
  return train_step


# ------------------------------------------------------------------------------------ checkpoints

class _IteratorState:
  """Carries a grain iterator state (a JSON-able dict) through orbax's grain handler, which
  writes one file per process. Saving takes a snapshot made at the step, so an async save
  cannot race the training loop; restoring fills `state`."""

  def __init__(self, state: Optional[dict] = None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)

  def start_prefetch(self) -> None:
    pass


REPLICA_PARALLEL_MIN_BYTES = 1 << 20


def write_small_arrays_from_one_replica(min_bytes: int = REPLICA_PARALLEL_MIN_BYTES) -> None:
  """Sets orbax's (process-wide) jax.Array handler to write arrays whose per-replica slice
  would be under `min_bytes` from one replica instead of cooperatively from all of them.

  Orbax's default "replica-parallel" save slices every replicated array on device into one part
  per replica before writing: eager ops for each of the 547 arrays of PRNet's training state.
  On 8 CPU devices that blocked the training loop for 9.5 s at the first save and 1.3 s at later
  ones; with this, 0.9 s and 0.2 s (`benchmarks/checkpoint_save.py`). Large arrays (pods' big
  layers) stay replica-parallel. Checkpoints written either way restore the same way.
  """
  handler = ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=min_bytes)
  ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def _grain():
  # Imported where checkpoints hold the data iterator, so the trainer itself (make_trainer: the
  # step, benchmarks, notebooks) needs no input-pipeline packages.
  import grain.python as grain  # pylint: disable=g-import-not-at-top
  return grain


def _save(mngr, state: TrainState, data_state: dict, model_config: ModelConfig):
  grain = _grain()
  mngr.save(int(state.step), args=ocp.args.Composite(**{
      VARIABLES: ocp.args.StandardSave({'params': state.params,
                                        'batch_stats': state.batch_stats}),
      TRAIN: ocp.args.StandardSave({'step': state.step, 'opt_state': state.opt_state,
                                    'rng': state.rng}),
      MODEL_CONFIG: ocp.args.JsonSave(model_config.to_dict()),
      DATA_ITER: grain.PyGrainCheckpointSave(_IteratorState(data_state))}), force=True)


def _restore_latest(mngr, abstract: TrainState) -> tuple[Optional[TrainState], Optional[dict]]:
  """Newest checkpoint that restores; a broken one is reported and the previous one used."""
  broken = []
  try:
    return _restore_newest_good(mngr, abstract, broken)
  finally:
    if broken:  # move unreadable checkpoints aside (kept for inspection) so saving can reuse
      if jax.process_index() == 0:  # their step numbers
        for step in broken:
          path = os.path.join(str(mngr.directory), str(step))
          os.replace(path, f'{path}.unreadable-{int(time.time())}')
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices('prnet_jax: moved unreadable checkpoints')
      mngr.reload()


def _restore_newest_good(mngr, abstract, broken):
  grain = _grain()
  for step in sorted(mngr.all_steps(), reverse=True):
    holder = _IteratorState()
    try:
      r = mngr.restore(step, args=ocp.args.Composite(**{
          VARIABLES: ocp.args.StandardRestore({'params': abstract.params,
                                               'batch_stats': abstract.batch_stats}),
          TRAIN: ocp.args.StandardRestore({'step': abstract.step,
                                           'opt_state': abstract.opt_state,
                                           'rng': abstract.rng}),
          DATA_ITER: grain.PyGrainCheckpointRestore(holder)}))
    except Exception as e:  # any orbax/IO failure: fall back to the previous checkpoint
      _log(f'checkpoint {mngr.directory}/{step} could not be restored ({type(e).__name__}: '
           f'{str(e)[:300]}); trying an older one')
      broken.append(step)
      continue
    v, t = r[VARIABLES], r[TRAIN]
    return TrainState(step=t['step'], params=v['params'], batch_stats=v['batch_stats'],
                      opt_state=t['opt_state'], rng=t['rng']), holder.state
  return None, None


# ------------------------------------------------------------------------------------ logging

class MetricWriter:
  """Scalars to `metrics.jsonl` and TensorBoard event files (process 0 only)."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:
        self._tb = None

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def _fmt_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


# ------------------------------------------------------------------------------------ trainer

@dataclasses.dataclass(frozen=True)
class Trainer:
  """The model, optimiser, shardings and jitted functions of a run (no data, no I/O)."""
  mesh: jax.sharding.Mesh
  model: PRNet
  tx: optax.GradientTransformation
  weights: jax.Array
  data_sharding: NamedSharding
  state_sharding: Any
  abstract_state: TrainState   # ShapeDtypeStructs with shardings (restore targets)
  init: Any                    # rng -> TrainState, created already sharded
  step: Any                    # (state, batch) -> (state, metrics); donates state
  grad: Any                    # (state, batch) -> ((loss, (data loss, stats)), grads)


def make_trainer(config, steps_per_epoch: int, assets: UVAssets,
                 mesh: Optional[jax.sharding.Mesh] = None) -> Trainer:
  mesh = mesh or make_mesh(config)
  model = PRNet.from_config(ModelConfig.from_mapping(dict(config.model)))
  weights = jnp.asarray(assets.loss_weights)
  tx = make_optimizer(config, steps_per_epoch)
  aug = (augment.AugmentConfig.from_mapping(config.augment) if config.get('augment')
         else augment.NO_AUGMENT)

  def create_state(rng):
    init_rng, train_rng = jax.random.split(rng)
    variables = init_variables(model, init_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                      batch_stats=variables['batch_stats'],
                      opt_state=tx.init(variables['params']),
                      rng=jax.random.key_data(train_rng))

  abstract = jax.eval_shape(create_state, jax.random.key(0))
  state_sharding = jax.tree_util.tree_map(lambda x: param_sharding(mesh, x), abstract)
  abstract = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_sharding)
  data_sharding = batch_sharding(mesh)
  loss_fn = make_loss_fn(model, weights, aug, config.weight_decay)
  replicated = NamedSharding(mesh, P())
  step = jax.jit(make_train_step(loss_fn, tx), in_shardings=(state_sharding, data_sharding),
                 out_shardings=(state_sharding, replicated), donate_argnums=0)
  grad = jax.jit(lambda s, b: jax.value_and_grad(loss_fn, has_aux=True)(s.params, s, b),
                 in_shardings=(state_sharding, data_sharding))
  return Trainer(mesh=mesh, model=model, tx=tx, weights=weights, data_sharding=data_sharding,
                 state_sharding=state_sharding, abstract_state=abstract,
                 init=jax.jit(create_state, out_shardings=state_sharding), step=step,
                 grad=grad)


# ------------------------------------------------------------------------------------ main

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       build_if_missing: bool = True) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds checkpoints); returns the last metrics."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))

  # Mesh.
  mesh = make_mesh(config)
  data_sharding = batch_sharding(mesh)

  # Data.
  source = prepare_data(config, build_if_missing)
  model_config = ModelConfig.from_mapping(dict(config.model))
  steps_per_epoch = max(len(source) // config.batch_size, 1)
  num_steps = int(config.get('num_train_steps', 0) or config.num_epochs * steps_per_epoch)
  loader = input_pipeline.train_loader(source, config.batch_size, config.seed,
                                       model_config.resolution, config.get('worker_count', 0))

  # Model, loss, sharded state and the jitted step.
  assets = uv_assets_for(config, model_config.resolution)
  trainer = make_trainer(config, steps_per_epoch, assets, mesh)
  model = trainer.model
  schedule = make_schedule(config, steps_per_epoch)

  # Checkpoint: resume from the newest good one.
  write_small_arrays_from_one_replica()
  options = ocp.CheckpointManagerOptions(max_to_keep=config.get('keep_checkpoints', 3),
                                         enable_async_checkpointing=True, create=True)
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), options=options)
  state, data_state = _restore_latest(mngr, trainer.abstract_state)
  if state is None:
    state = trainer.init(jax.random.key(config.seed))
    _log(f'new run: {num_steps} steps ({steps_per_epoch} per epoch), global batch '
         f'{config.batch_size}, {jax.device_count()} devices on {jax.process_count()} '
         f'process(es), mesh {dict(mesh.shape)}')
  else:
    _log(f'resumed from {mngr.directory}/{int(state.step)}')
  batches = input_pipeline.DeviceIterator(loader, data_sharding, state=data_state)

  train_step = trainer.step
  evaluate = _make_evaluator(config, model, trainer.weights, assets, mesh)

  # Preemption: SIGTERM asks the loop to save and stop.
  preempted = {'flag': False}
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.update(flag=True))

  writer = MetricWriter(workdir)
  log_every = max(int(config.get('log_every', 50)), 1)
  ckpt_every = int(config.get('checkpoint_every', 500))
  eval_every = int(config.get('eval_every', 0))
  step = int(state.step)
  last = {}
  sums: Optional[dict[str, jax.Array]] = None
  window_start, window_step = time.time(), step
  try:
    while step < num_steps:
      state, m = train_step(state, next(batches))
      step += 1
      sums = m if sums is None else jax.tree_util.tree_map(jnp.add, sums, m)
      # Log the first step too: it shows the loss before learning.
      at_log = step % log_every == 0 or step in (1, num_steps) or preempted['flag']
      if not at_log:
        continue
      # One host sync per log interval: mean metrics, NaN check, progress.
      n = step - window_step
      scalars = {k: float(v) / n for k, v in jax.device_get(sums).items()}
      sums = None
      if not all(np.isfinite(v) for v in scalars.values()):
        good = mngr.latest_step()
        kept = (f'the last good checkpoint is {mngr.directory}/{good}' if good is not None
                else 'no checkpoint was saved yet')
        raise TrainingError(f'loss is {scalars["loss"]} (not finite) between steps '
                            f'{window_step} and {step}; stopping without saving: {kept}')
      dt = time.time() - window_start
      ips = n * config.batch_size / max(dt, 1e-9)
      scalars.update(images_per_s=ips, learning_rate=float(schedule(step - 1)))
      _log(f'step {step}/{num_steps}  loss {scalars["loss"]:.5f}  data_loss '
           f'{scalars["data_loss"]:.5f}  {ips:.1f} img/s  ETA '
           f'{_fmt_eta((num_steps - step) * dt / max(n, 1))}')
      writer.write(step, scalars)
      last = scalars
      if eval_every and (step % eval_every < log_every or step == num_steps) and evaluate:
        ev = evaluate(state)
        _log('  eval: ' + '  '.join(f'{k} {v:.5f}' for k, v in ev.items()))
        writer.write(step, ev)
        last.update(ev)
      if (ckpt_every and step % ckpt_every < log_every) or step == num_steps or \
          preempted['flag']:
        _save(mngr, state, batches.get_state(), model_config)
      if preempted['flag']:
        _log(f'SIGTERM: saved step {step}, stopping')
        break
      window_start, window_step = time.time(), step
  finally:
    mngr.wait_until_finished()
    mngr.close()
    batches.close()
    writer.close()
    signal.signal(signal.SIGTERM, previous_handler)
  return last


def _make_evaluator(config, model, weights, assets, mesh):
  """Periodic held-out evaluation with `prnet_jax.evaluate` (the protocol of --mode=eval):
  mean data loss and landmark/dense NME on `eval_split`; None without such a split."""
  from prnet_jax import evaluate as evaluate_lib
  if not config.get('eval_every', 0):
    return None
  try:
    source = input_pipeline.data_source(config.dataset, config.get('eval_split', 'test'),
                                        config.data_dir or None)
  except (input_pipeline.DatasetNotFoundError, KeyError, ValueError):
    return None
  if len(source) == 0:
    return None
  opts = evaluate_lib.EvalOptions.from_config(
      {**dict(config.get('eval', {})), 'batch_size': config.batch_size, 'max_examples': 0})
  dense = len(source[0]['position_map']) > 0
  evaluator = evaluate_lib.Evaluator(model, assets, mesh, opts, dense=dense,
                                     loss_weights=weights)

  def evaluate(state: TrainState) -> dict[str, float]:
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    out = evaluator.run(variables, source)
    return {f'eval_{k}': float(np.mean(v)) for k, v in out.items() if k != 'landmarks'}
  return evaluate
