"""Model-variable checkpoints: orbax checkpoints and compact files of a model's variables.

Serving, export and evaluation load models through this module alone; the checkpoints of a
training run (optimizer state, data iterator) are written by `prnet_jax.training.checkpointer`
in the same layout.

Layout: a `CheckpointManager` directory with one folder per step; each step holds the items

* ``variables``: ``{'params': ..., 'batch_stats': ...}`` (float32 arrays);
* ``model_config``: JSON of `ModelConfig` (so a checkpoint is self-describing);
* in training checkpoints (`prnet_jax.training.checkpointer`) also ``train`` (step, optimizer
  state, RNG) and ``data_iter`` (the input pipeline's position, one file per process).

`load_variables` restores only the first two, so converted official weights and our training
checkpoints load the same way; it takes the checkpoint folder or the run's workdir around it.

Compact checkpoints (`save_compact`): one ``.npz`` file of the variables in float16 with the
model config and the training run's config, for shipping a model inside the package (the
bundled pretrained model, `PRETRAINED`). `load_variables` and `run_config` read them too, and
take the name ``pretrained`` for the bundled one, so every command that takes a checkpoint
takes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from typing import Any, Mapping, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from prnet_jax import assets
from prnet_jax.nn.model import ModelConfig

VARIABLES = 'variables'
MODEL_CONFIG = 'model_config'
# Training writes its checkpoints here, inside the run's workdir.
CHECKPOINTS_SUBDIR = 'checkpoints'
# The bundled model (trained on the ICT face world: README, "The pretrained model"), and the
# name that stands for it wherever a checkpoint is taken.
PRETRAINED = 'pretrained'
PRETRAINED_FILE = assets.path('pretrained_ict.npz')
_COMPACT_META = '__meta__'
_FLOAT16_MAX = 6e4  # leaves beyond float16's range stay float32


class CheckpointError(RuntimeError):
  """A checkpoint is missing or unreadable; the message names the path."""


def save_variables(directory: str, variables: Mapping[str, Any], model_config: ModelConfig,
                   step: int = 0) -> str:
  """Writes `variables` and `model_config` as step `step` under `directory`; returns its path.

  The step is written in a staging folder and swapped in only once complete, so a failure
  (disk full, a kill) leaves a step already there as it was."""
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  tree = {k: jax.tree_util.tree_map(np.asarray, dict(v)) for k, v in variables.items()}
  staging = os.path.join(directory, f'.staging-{os.getpid()}')
  final, replaced = os.path.join(directory, str(step)), None
  try:
    with ocp.CheckpointManager(staging) as mngr:
      mngr.save(step, args=ocp.args.Composite(**{
          VARIABLES: ocp.args.StandardSave(tree),
          MODEL_CONFIG: ocp.args.JsonSave(model_config.to_dict())}), force=True)
      mngr.wait_until_finished()
    if os.path.exists(final):
      replaced = os.path.join(directory, f'.replaced-{os.getpid()}')
      os.replace(final, replaced)
    os.replace(os.path.join(staging, str(step)), final)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    if replaced and os.path.exists(final):
      shutil.rmtree(replaced, ignore_errors=True)
  return final


@contextlib.contextmanager
def quiet_absl():
  """Within the block, absl (orbax's logger) reports errors only."""
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _has_steps(directory: str) -> bool:
  return any(name.isdigit() and os.path.isdir(os.path.join(directory, name))
             for name in os.listdir(directory))


def resolve_directory(path: str) -> str:
  """The CheckpointManager folder for `path`: `path` itself, or, for a training run's workdir
  (the folder given to ``launch.py --workdir``), its ``checkpoints/`` folder."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise CheckpointError(f'{path}: checkpoint directory does not exist')
  inner = os.path.join(path, CHECKPOINTS_SUBDIR)
  if not _has_steps(path) and os.path.isdir(inner):
    return inner
  return path


def _compact_path(path: str) -> Optional[str]:
  """The .npz file `path` names ('pretrained' is the bundled one), or None for directories."""
  if path == PRETRAINED:
    if not os.path.isfile(PRETRAINED_FILE):
      raise CheckpointError(f'{PRETRAINED_FILE}: the bundled pretrained model is missing from '
                            f'this installation (reinstall the package)')
    return PRETRAINED_FILE
  path = os.path.abspath(os.path.expanduser(path))
  return path if path.endswith('.npz') and not os.path.isdir(path) else None


def save_compact(path: str, variables: Mapping[str, Any], model_config: ModelConfig,
                 step: int, run: Optional[dict] = None) -> str:
  """Writes `variables` as one .npz at `path`: float leaves in float16 (float32 where out of
  its range), with the model config, the step and the run's config `run` as JSON."""
  flat = {}
  for collection, tree in variables.items():
    for keys, leaf in jax.tree_util.tree_flatten_with_path(dict(tree))[0]:
      name = '/'.join([collection] + [str(getattr(k, 'key', k)) for k in keys])
      leaf = np.asarray(leaf)
      if leaf.dtype.kind == 'f' and np.abs(leaf).max(initial=0) < _FLOAT16_MAX:
        leaf = leaf.astype(np.float16)
      flat[name] = leaf
  meta = {'model_config': model_config.to_dict(), 'step': int(step), 'run_config': run or {}}
  flat[_COMPACT_META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, **flat)
  os.replace(tmp, path)
  return path


def _load_compact(path: str) -> tuple[dict[str, Any], ModelConfig, int, dict]:
  try:
    with np.load(path) as f:
      meta = json.loads(f[_COMPACT_META].tobytes().decode())
      variables: dict[str, Any] = {}
      for name in f.files:
        if name == _COMPACT_META:
          continue
        *parents, leaf = name.split('/')
        node = variables
        for p in parents:
          node = node.setdefault(p, {})
        a = f[name]
        node[leaf] = a.astype(np.float32) if a.dtype.kind == 'f' else a
  except (OSError, ValueError, KeyError) as e:
    raise CheckpointError(f'{path}: not a readable compact checkpoint ({e})') from e
  return (variables, ModelConfig.from_mapping(meta['model_config']), meta['step'],
          meta.get('run_config') or {})


def write_text_atomically(path: str, text: str) -> None:
  """Writes `path` through a temporary file in its folder (a crash leaves the old or the new)."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_run_config(directory: str, config: Mapping[str, Any]) -> str:
  """Writes `config` as ``config.json`` in a checkpoint directory (atomically), where
  `run_config` finds it: what a checkpoint that no training run wrote (converted weights) needs
  to be read right, e.g. its UV assets."""
  path = os.path.join(os.path.abspath(directory), 'config.json')
  write_text_atomically(path, json.dumps(dict(config), indent=2))
  return path


def run_config(path: str) -> Optional[dict]:
  """The training config (``config.json``) of the run a checkpoint belongs to, when `path` is a
  run's workdir or its ``checkpoints/`` folder, or the one stored in a compact checkpoint; None
  for other checkpoints (converted weights)."""
  compact = _compact_path(path)
  if compact is not None:
    return _load_compact(compact)[3] or None
  path = os.path.abspath(os.path.expanduser(path))
  for folder in (path, os.path.dirname(path)):
    f = os.path.join(folder, 'config.json')
    if os.path.isfile(f) and (folder == path or os.path.basename(path) == CHECKPOINTS_SUBDIR):
      try:
        with open(f) as fh:
          return json.load(fh)
      except (OSError, ValueError):
        return None
  return None


def load_variables(directory: str, step: Optional[int] = None
                   ) -> tuple[dict[str, Any], ModelConfig, int]:
  """Restores (variables as NumPy arrays, model config, step) from a checkpoint directory.

  `directory` is a CheckpointManager folder or a training run's workdir (see
  `resolve_directory`), a compact .npz file, or 'pretrained' (the bundled model); the newest
  step is used unless `step` is given.
  """
  compact = _compact_path(directory)
  if compact is not None:
    variables, model_config, saved_step, _ = _load_compact(compact)
    if step is not None and step != saved_step:
      raise CheckpointError(f'{compact}: holds step {saved_step} only, not {step}')
    return variables, model_config, saved_step
  directory = resolve_directory(directory)
  handlers = {VARIABLES: ocp.StandardCheckpointHandler(),
              MODEL_CONFIG: ocp.JsonCheckpointHandler()}
  # Training checkpoints hold more items (optimizer, data iterator); orbax warns about each
  # one it is not asked to restore, which is the point here.
  with quiet_absl(), ocp.CheckpointManager(directory, item_handlers=handlers) as mngr:
    steps = mngr.all_steps()
    if not steps:
      raise CheckpointError(f'{directory}: no checkpoint steps found (expected numbered step '
                            f'folders written by prnet_jax, or a run\'s workdir holding '
                            f'{CHECKPOINTS_SUBDIR}/)')
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
