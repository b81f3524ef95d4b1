"""The checkpoints of a training run: the whole training state, saved asynchronously, restored
with a fall-back past broken checkpoints; and the preemption notice.

Each step holds the items of a model-variable checkpoint (`prnet_jax.nn.checkpoints`:
``variables``, ``model_config``, so serving loads a run's checkpoint directly) and also
``train`` (step, optimizer state, RNG) and ``data_iter`` (the input pipeline's position, one
file per process).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from typing import Any, Iterator, Optional

import jax
import orbax.checkpoint as ocp

from prnet_jax.nn.checkpoints import MODEL_CONFIG, VARIABLES, quiet_absl
from prnet_jax.nn.model import ModelConfig
from prnet_jax.runtime import log

TRAIN = 'train'
DATA_ITER = 'data_iter'


class RestoreError(RuntimeError):
  """The checkpoints of a run cannot be restored onto the training state asked for."""


def _first_line(e: Exception, limit: int = 300) -> str:
  lines = [line for line in str(e).splitlines() if line.strip()]
  return (lines[0] if lines else '')[:limit]


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


def write_small_arrays_from_one_replica(
    min_bytes: Optional[int] = REPLICA_PARALLEL_MIN_BYTES) -> None:
  """Sets orbax's (process-wide) jax.Array handler to write arrays whose per-replica slice
  would be under `min_bytes` from one replica instead of cooperatively from all of them
  (None: orbax's default, every array replica-parallel).

  Orbax's default "replica-parallel" save slices every replicated array on device into one part
  per replica before writing: eager ops for each of the 547 arrays of PRNet's training state.
  On 8 CPU devices that blocked the training loop for 9.5 s at the first save and 1.3 s at later
  ones; with this, 0.9 s and 0.2 s (`benchmarks/checkpoint_save.py`). Large arrays (pods' big
  layers) stay replica-parallel. Checkpoints written either way restore the same way.
  """
  handler = ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=min_bytes)
  with quiet_absl():  # orbax warns that it overrides its own default handler: intended here
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def _grain():
  # Imported where checkpoints hold the data iterator, so the trainer itself (make_trainer: the
  # step, benchmarks, notebooks) needs no input-pipeline packages.
  import grain.python as grain  # pylint: disable=g-import-not-at-top
  return grain


class TrainCheckpointer:
  """The checkpoints of a training run: async saves of the whole training state (variables,
  step, optimizer state, RNG, the data iterator's position, the model config), the newest
  `keep` kept, and a restore that falls back from a broken checkpoint to the previous one.

  States are any object with the fields step, params, batch_stats, opt_state, rng and a
  ``replace(**fields)`` method (`prnet_jax.training.train.TrainState`)."""

  def __init__(self, directory: str, model_config: ModelConfig, keep: int = 3,
               replica_parallel_min_bytes: Optional[int] = REPLICA_PARALLEL_MIN_BYTES):
    write_small_arrays_from_one_replica(replica_parallel_min_bytes)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                           create=True)
    self._mngr = ocp.CheckpointManager(os.path.abspath(directory), options=options)
    self._model_config = model_config

  @property
  def directory(self) -> str:
    return str(self._mngr.directory)

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def save(self, state, data_state: Optional[dict]) -> None:
    """Starts an async save of `state` at its step (returns once the arrays are copied)."""
    grain = _grain()
    self._mngr.save(int(state.step), args=ocp.args.Composite(**{
        VARIABLES: ocp.args.StandardSave({'params': state.params,
                                          'batch_stats': state.batch_stats}),
        TRAIN: ocp.args.StandardSave({'step': state.step, 'opt_state': state.opt_state,
                                      'rng': state.rng}),
        MODEL_CONFIG: ocp.args.JsonSave(self._model_config.to_dict()),
        DATA_ITER: grain.PyGrainCheckpointSave(_IteratorState(data_state))}), force=True)

  def restore_latest(self, abstract) -> tuple[Optional[Any], Optional[dict]]:
    """(state, data iterator state) of the newest checkpoint that restores onto `abstract`'s
    shapes and shardings, or (None, None) without one.

    A newest checkpoint that fails to restore is reported, moved aside (kept for inspection,
    so that saving can reuse its step) and the one before it used. If that one fails too, the
    cause is not damage to one save (a changed config, a changed library): a RestoreError says
    so and nothing is moved."""
    steps = sorted(self._mngr.all_steps(), reverse=True)
    if not steps:
      return None, None
    try:
      return self.restore(steps[0], abstract)
    except Exception as e:  # any orbax/IO failure: try the checkpoint before it
      newest_error = f'{type(e).__name__}: {_first_line(e)}'
    if len(steps) > 1:
      try:
        restored = self.restore(steps[1], abstract)
      except Exception as e:
        raise RestoreError(
            f'checkpoints {steps[0]} and {steps[1]} in {self.directory} both fail to restore '
            f'onto this run\'s training state ({newest_error}; {type(e).__name__}: '
            f'{_first_line(e)}); nothing was moved. If the config changed, train in a new '
            f'--workdir or start over (launch.py --start_over)') from e
    else:
      restored = (None, None)
    log(f'checkpoint {self.directory}/{steps[0]} could not be restored ({newest_error}); '
        f'set aside as {steps[0]}.unreadable-*, ' + (
            f'resuming from {steps[1]}' if len(steps) > 1 else 'starting from step 0'))
    self._set_aside(steps[0])
    return restored

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      path = os.path.join(self.directory, str(step))
      os.replace(path, f'{path}.unreadable-{int(time.time())}')
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices('prnet_jax: moved an unreadable checkpoint')
    self._mngr.reload()

  def saved_model_config(self, step: int) -> dict:
    """The model config (a dict of ModelConfig's fields) saved with checkpoint `step`."""
    with quiet_absl():
      r = self._mngr.restore(step, args=ocp.args.Composite(**{
          MODEL_CONFIG: ocp.args.JsonRestore()}))
    return dict(r[MODEL_CONFIG])

  def restore(self, step: int, abstract, data_state: bool = True
              ) -> tuple[Any, Optional[dict]]:
    """(state, data iterator state or None) of checkpoint `step`, onto `abstract`'s shapes and
    shardings. The data iterator is saved per process, so `data_state=False` reads a
    checkpoint written by another number of processes."""
    items = {
        VARIABLES: ocp.args.StandardRestore({'params': abstract.params,
                                             'batch_stats': abstract.batch_stats}),
        TRAIN: ocp.args.StandardRestore({'step': abstract.step, 'opt_state': abstract.opt_state,
                                         'rng': abstract.rng})}
    holder = _IteratorState()
    if data_state:
      items[DATA_ITER] = _grain().PyGrainCheckpointRestore(holder)
    r = self._mngr.restore(step, args=ocp.args.Composite(**items))
    v, t = r[VARIABLES], r[TRAIN]
    return abstract.replace(step=t['step'], params=v['params'], batch_stats=v['batch_stats'],
                            opt_state=t['opt_state'], rng=t['rng']), holder.state

  def wait_until_finished(self) -> None:
    """Blocks until the async saves started so far are written."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for the last async save and releases the manager."""
    self.wait_until_finished()
    self._mngr.close()


@contextlib.contextmanager
def preemption_notice() -> Iterator[threading.Event]:
  """Within the block, SIGTERM (a scheduler's preemption notice) sets the yielded event instead
  of ending the process, so the training loop can save a checkpoint and stop."""
  event = threading.Event()
  previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
  try:
    yield event
  finally:
    signal.signal(signal.SIGTERM, previous)
