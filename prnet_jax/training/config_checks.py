"""Checks of a run's config before anything runs: field names (with the nearest known name for
a misspelt one) and values that cannot work. Each problem is one line; `launch.py` prints them
and exits with status 2, `train.train_and_evaluate` raises them as one TrainingError.

Pure functions over ml_collections ConfigDicts (or nested mappings); no JAX.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable, Mapping

_CHOICES = {
    'model.dtype': ('float32', 'bfloat16', 'float16', 'float64'),
    'model.impl': ('fast', 'reference'),
    'optimizer': ('adam', 'sgd'),
    'lr_schedule': ('step', 'cosine'),
    'eval.norm': ('box', 'diag'),
    'eval.dense_norm': ('box', 'face_box'),
    'eval.z_align': ('mean', 'min', 'none'),
}


def _positive(v) -> bool:
  return _number(v) and v > 0


def _non_negative(v) -> bool:
  return _number(v) and v >= 0


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # not NaN


def _integer(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _range(lo_ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
  def ok(v) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) == 2 and all(lo_ok(x) for x in v)
            and v[0] <= v[1])
  return ok


# field -> (predicate, what it must be). Fields a config does not have are not checked.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    'seed': (_integer, 'an integer'),
    'batch_size': (lambda v: _integer(v) and v >= 1, 'an integer >= 1'),
    'num_epochs': (_non_negative, '>= 0'),
    'num_train_steps': (lambda v: _integer(v) and v >= 0, 'an integer >= 0'),
    'worker_count': (lambda v: _integer(v) and v >= 0, 'an integer >= 0'),
    'learning_rate': (_positive, '> 0'),
    'lr_decay_every_epochs': (_positive, '> 0'),
    'lr_decay_factor': (lambda v: _number(v) and 0 < v <= 1, 'in (0, 1]'),
    'warmup_steps': (lambda v: _integer(v) and v >= 0, 'an integer >= 0'),
    'weight_decay': (_non_negative, '>= 0'),
    'log_every': (lambda v: _integer(v) and v >= 1, 'an integer >= 1'),
    'checkpoint_every': (lambda v: _integer(v) and v >= 0, 'an integer >= 0 (0: only at the end)'),
    'keep_checkpoints': (lambda v: _integer(v) and v >= 1, 'an integer >= 1'),
    'eval_every': (lambda v: _integer(v) and v >= 0, 'an integer >= 0'),
    'predict_refine': (lambda v: _integer(v) and v >= 0, 'an integer >= 0'),
    'model.resolution': (lambda v: _integer(v) and v >= 32 and v % 32 == 0,
                         'a positive multiple of 32 (five stride-2 stages)'),
    'model.width': (lambda v: _integer(v) and v >= 1, 'an integer >= 1'),
    'model.bn_momentum': (lambda v: _number(v) and 0 <= v < 1, 'in [0, 1)'),
    'mesh.fsdp': (lambda v: _integer(v) and v >= 1, 'an integer >= 1'),
    'augment.rotation_deg': (_non_negative, '>= 0'),
    'augment.translation': (lambda v: _number(v) and 0 <= v < 1, 'in [0, 1)'),
    'augment.scale': (_range(_positive), 'a pair (low, high) with 0 < low <= high'),
    'augment.color': (_range(_non_negative), 'a pair (low, high) with 0 <= low <= high'),
    'augment.grayscale_prob': (lambda v: _number(v) and 0 <= v <= 1, 'in [0, 1]'),
    'augment.blur_prob': (lambda v: _number(v) and 0 <= v <= 1, 'in [0, 1]'),
    'augment.blur_sigma': (_range(_non_negative), 'a pair (low, high) with 0 <= low <= high'),
    'augment.noise_std': (_non_negative, '>= 0'),
    'eval.auc_threshold': (_positive, '> 0'),
    'eval.batch_size': (lambda v: _integer(v) and v >= 1, 'an integer >= 1'),
    'eval.max_examples': (lambda v: _integer(v) and v >= 0, 'an integer >= 0 (0: all)'),
}


def field_paths(config: Mapping[str, Any], prefix: str = '') -> list[str]:
  """Every dotted field path of a nested config, sections included ('model', 'model.width')."""
  paths = []
  for key, value in config.items():
    path = f'{prefix}{key}'
    paths.append(path)
    if isinstance(value, Mapping) or hasattr(value, 'items') and not isinstance(value, str):
      paths.extend(field_paths(value, f'{path}.'))
  return paths


def _get(config: Mapping[str, Any], path: str):
  node = config
  for key in path.split('.'):
    if not (isinstance(node, Mapping) or hasattr(node, 'items')) or key not in node:
      raise KeyError(path)
    node = node[key]
  return node


def unknown_fields(config: Mapping[str, Any], paths: Iterable[str]) -> list[str]:
  """One line per path that is not a field of `config`, with the nearest known name."""
  known = field_paths(config)
  problems = []
  for path in paths:
    if path in known:
      continue
    near = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
    hint = f'; did you mean {near[0]!r}?' if near else ''
    problems.append(f'config has no field {path!r}{hint}')
  return problems


def bad_values(config: Mapping[str, Any]) -> list[str]:
  """One line per field whose value cannot work (wrong type, out of range, unknown choice)."""
  problems = []
  for path, choices in _CHOICES.items():
    try:
      value = _get(config, path)
    except KeyError:
      continue
    if value not in choices:
      problems.append(f'config.{path} is {value!r}; choose one of {", ".join(choices)}')
  for path, (ok, must_be) in _RULES.items():
    try:
      value = _get(config, path)
    except KeyError:
      continue
    if isinstance(value, list):
      value = tuple(value)
    if not ok(value):
      problems.append(f'config.{path} is {value!r}; it must be {must_be}')
  steps = _maybe(config, 'num_train_steps', 0)
  epochs = _maybe(config, 'num_epochs', 0)
  if _number(steps) and _number(epochs) and not steps and not epochs:
    problems.append('config.num_train_steps and config.num_epochs are both 0; set one of them')
  return problems


def _maybe(config, path: str, default):
  try:
    return _get(config, path)
  except KeyError:
    return default


def override_paths(argv: Iterable[str], flag: str = 'config') -> list[str]:
  """The field paths that ``--config.a.b=v`` (or ``--config.a.b v``) arguments override."""
  paths = []
  for arg in argv:
    if arg == '--':
      break
    for dashes in ('--', '-'):
      head = f'{dashes}{flag}.'
      if arg.startswith(head):
        paths.append(arg[len(head):].split('=', 1)[0])
        break
  return paths
