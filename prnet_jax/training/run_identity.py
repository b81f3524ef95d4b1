"""Is a training config the same run as the checkpoints in its workdir?

A resume must continue the run the checkpoints belong to. A config whose network, data or UV
layout differs cannot: restoring would fail on every checkpoint (different shapes) or, worse,
succeed and silently train on another dataset or layout. This module names the differences;
`train.train_and_evaluate` stops with them before anything is written.

Pure functions over dicts; the caller reads the saved values
(`checkpointer.TrainCheckpointer.saved_model_config`, the run's config.json). Other changes
that alter the training state's arrays fail every restore instead, and
`TrainCheckpointer.restore_latest` stops on that without moving anything.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

# ModelConfig fields that change neither the parameters nor what they mean: the compute dtype
# (parameters and BN statistics stay float32) and how layers are computed.
MODEL_FIELDS_FREE = ('dtype', 'impl')
# Run-config fields that fix what the model learns and what the data iterator's position means.
RUN_FIELDS = ('dataset', 'uv_assets', 'optimizer')


def differences(saved_model: Optional[Mapping[str, Any]], model: Mapping[str, Any],
                saved_run: Optional[Mapping[str, Any]], run: Mapping[str, Any]) -> list[str]:
  """'field: saved -> this config' for each differing model field and run field (RUN_FIELDS).
  A saved side that is None (not recorded) is not compared."""
  diffs = []
  if saved_model is not None:
    for key in sorted(set(saved_model) | set(model)):
      if key in MODEL_FIELDS_FREE:
        continue
      if saved_model.get(key) != model.get(key):
        diffs.append(f'model.{key}: {saved_model.get(key)!r} -> {model.get(key)!r}')
  if saved_run is not None:
    for key in RUN_FIELDS:
      if key in saved_run and key in run and saved_run[key] != run[key]:
        diffs.append(f'{key}: {saved_run[key]!r} -> {run[key]!r}')
  return diffs


def mismatch_message(workdir: str, step: int, diffs: Sequence[str]) -> str:
  """The one sentence a resume that is not the same run stops with."""
  return (f'{workdir} holds checkpoints (newest: step {step}) of a different run than this '
          f'config ({"; ".join(diffs)}); resume with the run\'s own config '
          f'({workdir}/config.json), train in a new --workdir, or start over here with '
          f'--start_over (its checkpoints and logs are kept in {workdir}/previous-<time>/)')
