"""Training: `train_and_evaluate(config, workdir)`, on any number of devices and hosts.

Stages, top to bottom: data -> mesh, model and loss, sharded state, jitted step -> checkpoint
(resume) -> loop (progress, metrics, evaluation, checkpoints, preemption).

One `jax.jit` step with `NamedSharding`s: the batch is split over every device, parameters are
replicated (or sharded along the 'fsdp' mesh axis), BatchNorm statistics are reduced over the
global batch by XLA, augmentation runs inside the step, keyed by `fold_in(rng, step)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
import ml_collections
import numpy as np
import optax

from prnet_jax.data import augment, input_pipeline
from prnet_jax.evaluation import alignment
from prnet_jax.faces.catalog import uv_assets_for
from prnet_jax.faces.uv_assets import AssetError, UVAssets
from prnet_jax.nn import checkpoints, losses, sharding
from prnet_jax.nn.model import ModelConfig, PRNet, init_variables
from prnet_jax.runtime import log
from prnet_jax.training import config_checks, run_identity
from prnet_jax.training.checkpointer import RestoreError, TrainCheckpointer, preemption_notice


class TrainingError(RuntimeError):
  pass


@flax.struct.dataclass
class TrainState:
  step: jax.Array      # int32 scalar
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array       # raw key data (uint32), so that it checkpoints like any array


# ------------------------------------------------------------------------------------ data

def training_data(config):
  """The training split's random-access source; a TrainingError that says how to build it."""
  try:
    return input_pipeline.data_source(config.dataset, 'train', config.data_dir or None)
  except input_pipeline.DatasetNotFoundError as e:
    hint = ('' if config.dataset.startswith('synthetic_faces') else
            '\n\nTo try the pipeline without downloads, train on synthetic faces instead:\n'
            '  python launch.py --config=configs/prnet.py:small --workdir=workdirs/small')
    raise TrainingError(f'{e}{hint}') from e


# ------------------------------------------------------------------------------------ step

def make_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """`lr_schedule` 'step' (the paper's): the learning rate multiplied by `lr_decay_factor` every
  `lr_decay_every_epochs` (after a linear warm-up over `warmup_steps` when > 0: large batches);
  'cosine': linear warm-up over `warmup_steps`, then a cosine decay to 1% of it at the run's
  last step."""
  kind = config.get('lr_schedule', 'step')
  if kind == 'cosine':
    total = config.num_train_steps or config.num_epochs * steps_per_epoch
    warmup = min(config.get('warmup_steps', 0), total // 2)
    return optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, max(total, warmup + 1),
        end_value=0.01 * config.learning_rate)
  if kind != 'step':
    raise ValueError(f"config.lr_schedule must be 'step' or 'cosine', got {kind!r}")
  step = optax.exponential_decay(
      config.learning_rate, transition_steps=config.lr_decay_every_epochs * steps_per_epoch,
      decay_rate=config.lr_decay_factor, staircase=True)
  warmup = int(config.get('warmup_steps', 0))
  if warmup <= 0:
    return step
  # The decay keeps counting from step 0: the warm-up only ramps the first steps in.
  return lambda count: step(count) * jnp.minimum(1.0, count / warmup)


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


# ------------------------------------------------------------------------------------ logging

class MetricWriter:
  """Scalars to `metrics.jsonl` and TensorBoard event files (process 0 only)."""

  def __init__(self, workdir: str, start_step: int = 0):
    """Continues the logs of a run (re)starting at `start_step`: records of later steps
    (written before a kill or preemption, and about to be replayed) are dropped, from
    metrics.jsonl here and from TensorBoard by its purge step."""
    self.enabled = jax.process_index() == 0
    if self.enabled:
      path = os.path.join(workdir, 'metrics.jsonl')
      _drop_records_after(path, start_step)
      self._jsonl = open(path, 'a')
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'),
                                 purge_step=start_step + 1)
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


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites a metrics.jsonl without its records of steps after `step` (atomically; a
  line that is not a record, e.g. cut short by a kill, is dropped too)."""
  if not os.path.exists(path):
    return
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        keep = int(json.loads(line)['step']) <= step
      except (ValueError, KeyError, TypeError):
        keep = False
      if keep:
        kept.append(line)
      else:
        dropped += 1
  if dropped:
    checkpoints.write_text_atomically(path, ''.join(kept))


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
  loss_fn: Any                 # (params, state, batch) -> (loss, (data loss, batch_stats))
  init: Any                    # rng -> TrainState, created already sharded
  step: Any                    # (state, batch) -> (state, metrics); donates state


def make_trainer(config, steps_per_epoch: int, assets: UVAssets,
                 mesh: Optional[jax.sharding.Mesh] = None) -> Trainer:
  mesh = mesh or sharding.make_mesh(int(config.get('mesh', {}).get('fsdp', 1)))
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
  state_sharding = jax.tree_util.tree_map(lambda x: sharding.param_sharding(mesh, x), abstract)
  abstract = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_sharding)
  data_sharding = sharding.batch_sharding(mesh)
  loss_fn = make_loss_fn(model, weights, aug, config.weight_decay)
  step = jax.jit(make_train_step(loss_fn, tx), in_shardings=(state_sharding, data_sharding),
                 out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)
  return Trainer(mesh=mesh, model=model, tx=tx, weights=weights, data_sharding=data_sharding,
                 state_sharding=state_sharding, abstract_state=abstract, loss_fn=loss_fn,
                 init=jax.jit(create_state, out_shardings=state_sharding), step=step)


# ------------------------------------------------------------------------------------ main

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       start_over: bool = False) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds checkpoints); returns the last metrics.

  The dataset must be built (`python -m datasets.build NAME`; `launch.py` builds the synthetic
  ones on first use); otherwise a TrainingError says how. A workdir whose checkpoints belong to
  another run (model, dataset, UV layout or optimizer differ) is a TrainingError before anything
  is written; `start_over` moves that run's checkpoints and logs to WORKDIR/previous-<time>/
  and starts at step 0."""
  problems = config_checks.bad_values(config)
  if config.batch_size % jax.device_count():
    # The global batch is split evenly over every device of the mesh.
    problems.append(f'batch_size {config.batch_size} is not divisible by the '
                    f'{jax.device_count()} devices (of {jax.process_count()} process(es)); '
                    f'pass --config.batch_size=N with N a multiple of {jax.device_count()}')
  if problems:
    raise TrainingError('; '.join(problems))
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)

  # Data.
  source = training_data(config)
  model_config = ModelConfig.from_mapping(dict(config.model))
  steps_per_epoch = max(len(source) // config.batch_size, 1)
  num_steps = int(config.get('num_train_steps', 0) or config.num_epochs * steps_per_epoch)
  loader = input_pipeline.train_loader(source, config.batch_size, config.seed,
                                       model_config.resolution, config.get('worker_count', 0),
                                       posmap_residuals=True)

  # Mesh, model, loss, sharded state and the jitted step.
  try:
    assets = uv_assets_for(config.uv_assets, model_config.resolution)
  except AssetError as e:
    raise TrainingError(str(e)) from e
  trainer = make_trainer(config, steps_per_epoch, assets)
  mesh = trainer.mesh
  schedule = make_schedule(config, steps_per_epoch)

  # Checkpoint: resume from the newest good one.
  if start_over:
    _set_previous_run_aside(workdir)
  ckpt = TrainCheckpointer(os.path.join(workdir, 'checkpoints'), model_config,
                           keep=config.get('keep_checkpoints', 3))
  mismatch = _run_mismatch(ckpt, workdir, config, model_config)
  if mismatch:
    ckpt.close()
    raise TrainingError(mismatch)
  try:
    state, data_state = ckpt.restore_latest(trainer.abstract_state)
  except RestoreError as e:
    ckpt.close()
    raise TrainingError(str(e)) from e
  if state is None:
    state = trainer.init(jax.random.key(config.seed))
    log(f'new run: {num_steps} steps ({steps_per_epoch} per epoch), global batch '
         f'{config.batch_size}, {jax.device_count()} devices on {jax.process_count()} '
         f'process(es), mesh {dict(mesh.shape)}')
  else:
    log(f'resumed from {ckpt.directory}/{int(state.step)}')
  # The run's config, once the run really starts (data, assets, model and checkpoints all
  # resolved): a failed start never rewrites the config that predict and eval read.
  if jax.process_index() == 0:
    checkpoints.write_text_atomically(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
  batches = input_pipeline.DeviceIterator(loader, trainer.data_sharding, state=data_state)
  evaluate = _make_evaluator(config, trainer, assets)

  writer = MetricWriter(workdir, start_step=int(state.step))
  log_every = max(int(config.get('log_every', 50)), 1)
  ckpt_every = int(config.get('checkpoint_every', 500))
  eval_every = int(config.get('eval_every', 0))
  step = int(state.step)
  last = {}
  sums: Optional[dict[str, jax.Array]] = None
  window_start, window_step = time.time(), step
  # Preemption: SIGTERM asks the loop to save and stop.
  with preemption_notice() as preempted:
    try:
      while step < num_steps:
        state, m = trainer.step(state, next(batches))
        step += 1
        sums = m if sums is None else jax.tree_util.tree_map(jnp.add, sums, m)
        # Log the first step too: it shows the loss before learning.
        at_log = step % log_every == 0 or step in (1, num_steps) or preempted.is_set()
        if not at_log:
          continue
        # One host sync per log interval: mean metrics, NaN check, progress.
        n = step - window_step
        scalars = {k: float(v) / n for k, v in jax.device_get(sums).items()}
        sums = None
        if not all(np.isfinite(v) for v in scalars.values()):
          good = ckpt.latest_step()
          kept = (f'the last good checkpoint is {ckpt.directory}/{good}' if good is not None
                  else 'no checkpoint was saved yet')
          raise TrainingError(f'loss is {scalars["loss"]} (not finite) between steps '
                              f'{window_step} and {step}; stopping without saving: {kept}')
        dt = time.time() - window_start
        ips = n * config.batch_size / max(dt, 1e-9)
        scalars.update(images_per_s=ips, learning_rate=float(schedule(step - 1)))
        log(f'step {step}/{num_steps}  loss {scalars["loss"]:.5f}  data_loss '
             f'{scalars["data_loss"]:.5f}  {ips:.1f} img/s  ETA '
             f'{_fmt_eta((num_steps - step) * dt / max(n, 1))}')
        writer.write(step, scalars)
        last = scalars
        if eval_every and (step % eval_every < log_every or step == num_steps) and evaluate:
          ev = evaluate(state)
          log('  eval: ' + '  '.join(f'{k} {v:.5f}' for k, v in ev.items()))
          writer.write(step, ev)
          last.update(ev)
        if ((ckpt_every and step % ckpt_every < log_every) or step == num_steps
            or preempted.is_set()):
          ckpt.save(state, batches.get_state())
        if preempted.is_set():
          log(f'SIGTERM: saved step {step}, stopping')
          break
        window_start, window_step = time.time(), step
    finally:
      ckpt.close()
      batches.close()
      writer.close()
  return last


_PREVIOUS_RUN_FILES = ('checkpoints', 'metrics.jsonl', 'tensorboard', 'config.json', 'eval')


def _set_previous_run_aside(workdir: str) -> None:
  """Moves a run's checkpoints and logs into WORKDIR/previous-<time>/ (nothing deleted)."""
  present = [n for n in _PREVIOUS_RUN_FILES if os.path.exists(os.path.join(workdir, n))]
  if present and jax.process_index() == 0:
    aside = os.path.join(workdir, time.strftime('previous-%Y%m%d-%H%M%S'))
    os.makedirs(aside)
    for name in present:
      os.replace(os.path.join(workdir, name), os.path.join(aside, name))
    log(f'start over: the previous run\'s {", ".join(present)} moved to {aside}')
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices('prnet_jax: previous run set aside')


def _run_mismatch(ckpt: TrainCheckpointer, workdir: str, config,
                  model_config: ModelConfig) -> Optional[str]:
  """The sentence a resume stops with when the newest checkpoint is another run's, else None.
  What cannot be read is not judged here: `restore_latest` deals with damaged checkpoints."""
  step = ckpt.latest_step()
  if step is None:
    return None
  try:
    saved_model = ckpt.saved_model_config(step)
  except Exception:  # unreadable: damage, not a different run
    saved_model = None
  saved_run = None
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      saved_run = json.load(f)
  except (OSError, ValueError):
    pass
  diffs = run_identity.differences(saved_model, model_config.to_dict(), saved_run,
                                   config.to_dict())
  return run_identity.mismatch_message(workdir, step, diffs) if diffs else None


def _make_evaluator(config, trainer: Trainer, assets: UVAssets):
  """Periodic held-out evaluation with `prnet_jax.evaluation.alignment` (the protocol of --mode=eval):
  mean data loss and landmark/dense NME on `eval_split`; None without such a split."""
  if not config.get('eval_every', 0):
    return None
  try:
    source = input_pipeline.data_source(config.dataset, config.get('eval_split', 'test'),
                                        config.data_dir or None)
  except (input_pipeline.DatasetNotFoundError, KeyError, ValueError):
    return None
  if len(source) == 0:
    return None
  opts = alignment.EvalOptions.from_config(
      {**dict(config.get('eval', {})), 'batch_size': config.batch_size, 'max_examples': 0})
  dense = len(source[0]['position_map']) > 0
  ev = alignment.Evaluator(trainer.model, assets, trainer.mesh, opts, dense=dense,
                           loss_weights=trainer.weights)

  def evaluate(state: TrainState) -> dict[str, float]:
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    out = ev.run(variables, source)
    return {f'eval_{k}': float(np.mean(v)) for k, v in out.items() if k != 'landmarks'}
  return evaluate
