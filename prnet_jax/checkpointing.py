"""Orbax checkpoints of model variables, shared by training, evaluation, prediction and export.

Layout: a `CheckpointManager` directory with one folder per step; each step holds the items

* ``variables``: ``{'params': ..., 'batch_stats': ...}`` (float32 arrays);
* ``model_config``: JSON of `ModelConfig` (so a checkpoint is self-describing);
* further items the trainer adds (optimizer state, data iterator, ...).

`load_variables` restores only the first two, so converted official weights and our training
checkpoints load the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Mapping, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from prnet_jax.model import ModelConfig

VARIABLES = 'variables'
MODEL_CONFIG = 'model_config'


class CheckpointError(RuntimeError):
  """A checkpoint is missing or unreadable; the message names the path."""


def save_variables(directory: str, variables: Mapping[str, Any], model_config: ModelConfig,
                   step: int = 0) -> str:
  """Writes `variables` and `model_config` as step `step` under `directory`; returns its path."""
  directory = os.path.abspath(directory)
  tree = {k: jax.tree_util.tree_map(np.asarray, dict(v)) for k, v in variables.items()}
  with ocp.CheckpointManager(directory) as mngr:
    mngr.save(step, args=ocp.args.Composite(**{
        VARIABLES: ocp.args.StandardSave(tree),
        MODEL_CONFIG: ocp.args.JsonSave(model_config.to_dict())}), force=True)
    mngr.wait_until_finished()
  return os.path.join(directory, str(step))


@contextlib.contextmanager
def _quiet_absl():
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def load_variables(directory: str, step: Optional[int] = None
                   ) -> tuple[dict[str, Any], ModelConfig, int]:
  """Restores (variables as NumPy arrays, model config, step) from a checkpoint directory.

  `directory` is a CheckpointManager folder (the newest step is used unless `step` is given).
  """
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise CheckpointError(f'{directory}: checkpoint directory does not exist')
  handlers = {VARIABLES: ocp.StandardCheckpointHandler(),
              MODEL_CONFIG: ocp.JsonCheckpointHandler()}
  # Training checkpoints hold more items (optimizer, data iterator); orbax warns about each
  # one it is not asked to restore, which is the point here.
  with _quiet_absl(), ocp.CheckpointManager(directory, item_handlers=handlers) as mngr:
    steps = mngr.all_steps()
    if not steps:
      raise CheckpointError(f'{directory}: no checkpoint steps found (expected numbered step '
                            f'folders written by prnet_jax)')
    step = max(steps) if step is None else step
    if step not in steps:
      raise CheckpointError(f'{directory}: no step {step}; available: {sorted(steps)}')
    try:
      # Restore onto one local device whatever topology saved it (a pod's checkpoint loads on
      # a laptop), then hand NumPy to the caller, who places arrays on its own mesh.
      item_meta = mngr.item_metadata(step)[VARIABLES]
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree_util.tree_map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
          getattr(item_meta, 'tree', item_meta))
      restored = mngr.restore(step, args=ocp.args.Composite(**{
          VARIABLES: ocp.args.StandardRestore(target),
          MODEL_CONFIG: ocp.args.JsonRestore()}))
    except Exception as e:  # Orbax raises many types; name the checkpoint in one message.
      raise CheckpointError(f'{directory}/{step}: cannot restore model variables ({e})') from e
  variables = jax.tree_util.tree_map(np.asarray, dict(restored[VARIABLES]))
  return variables, ModelConfig.from_mapping(restored[MODEL_CONFIG]), step
