"""Converts the official PRNet TF1 checkpoint to a prnet_jax (orbax) checkpoint.

    python -m prnet_jax.serving.convert_official \\
        --checkpoint=PRNet/Data/net-data/256_256_resfcn256_weight --output=checkpoints/official

`--checkpoint` is the TF checkpoint prefix (the path without `.index` / `.data-*`), its `.index`
file, or the folder holding it. The `.data-00000-of-00001` weights file is a separate download of
the official release; converting into an existing `--output` needs `--overwrite`. No TensorFlow
is needed: `prnet_jax.serving.tf_checkpoint` reads the checkpoint format itself (sizes and
checksums checked). The converted checkpoint records its UV assets ('official', the official
uv-data shipped in the package), so predict, eval and export use them without flags. The official variables
(`resfcn256/...`, 245 of them; Adam slots and step counters are ignored) map one to one onto
our parameters: layouts already agree (conv kernels [kh, kw, in, out]; transposed-conv kernels
[kh, kw, out, in], which is Flax's layout with ``transpose_kernel=True``), so values are copied
unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax.nn import checkpoints
from prnet_jax.nn.model import ModelConfig, PRNet
from prnet_jax.serving import tf_checkpoint

SCOPE = 'resfcn256'
_LEAF = {('params', 'kernel'): 'weights', ('params', 'scale'): 'BatchNorm/gamma',
         ('params', 'bias'): 'BatchNorm/beta', ('batch_stats', 'mean'): 'BatchNorm/moving_mean',
         ('batch_stats', 'var'): 'BatchNorm/moving_variance'}
_RES_CHILD = {'conv1': 'Conv', 'conv2': 'Conv_1', 'conv3': 'Conv_2', 'shortcut': 'shortcut'}


class ConversionError(ValueError):
  """The TF checkpoint does not hold the PRNet variables we expect."""


def _tf_scope(prefix: str, index: int) -> str:
  return prefix if index == 0 else f'{prefix}_{index}'  # TF's variable_scope uniquification.


def tf_name(collection: str, path: Sequence[str]) -> str:
  """TF variable name of our variable `collection`/`path` (e.g. ('res3', 'conv2', 'bn', 'mean'))."""
  layer, *inner, leaf = path
  kind, index = re.fullmatch(r'([a-z]+)(\d+)', layer).groups()
  parts = [SCOPE, _tf_scope({'conv': 'Conv', 'res': 'resBlock', 'deconv': 'Conv2d_transpose'}[kind],
                            int(index))]
  if kind == 'res' and inner[0] in _RES_CHILD:
    parts.append(_RES_CHILD[inner[0]])
  # Drop our own 'conv'/'bn' leaf holders: TF puts the kernel beside the BatchNorm scope.
  return '/'.join(parts + [_LEAF[(collection, leaf)]])


def variable_specs(model: PRNet) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """{TF name: (collection, our path, shape)} for every variable of `model`."""
  shape = (1, model.resolution, model.resolution, 3)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  specs = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract):
    keys = tuple(p.key for p in path)
    name = tf_name(keys[0], keys[1:])
    if name in specs:
      raise AssertionError(f'two variables map to {name}')
    specs[name] = (keys[0], keys[1:], tuple(leaf.shape))
  return specs


def _nested_set(tree: dict, path: Sequence[str], value: Any) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def convert(get_tensor: Callable[[str], np.ndarray], available: dict[str, tuple[int, ...]],
            model: PRNet) -> dict[str, Any]:
  """Builds our variables from TF tensors.

  Args:
    get_tensor: name -> array (e.g. a TF CheckpointReader's get_tensor).
    available: {name: shape} of every variable in the checkpoint.
    model: the PRNet whose variables to fill.
  """
  specs = variable_specs(model)
  missing = sorted(set(specs) - set(available))
  if missing:
    raise ConversionError(f'{len(missing)} PRNet variables are missing from the checkpoint, e.g. '
                          f'{missing[:3]}; is this the official 256_256_resfcn256_weight?')
  variables: dict[str, Any] = {}
  for name, (collection, path, shape) in specs.items():
    if tuple(available[name]) != shape:
      raise ConversionError(f'{name}: checkpoint shape {tuple(available[name])} but the model '
                            f'(resolution {model.resolution}, width {model.width}) needs {shape}')
    value = np.asarray(get_tensor(name), np.float32)
    if not np.all(np.isfinite(value)):
      raise ConversionError(f'{name}: contains NaN or inf values')
    _nested_set(variables.setdefault(collection, {}), path, value)
  return variables


# The official network is `resfcn256`: trained on 256 x 256 crops and position maps, read with
# the official uv-data (shipped as the 'official' UV assets).
OFFICIAL_RESOLUTION = 256
OFFICIAL_UV_ASSETS = 'official'
DATA_FILE_HELP = ('the weights are a separate download from the official PRNet release (the '
                  'link is in its README, "Data/net-data"), not part of a git clone')


def _checkpoint_prefix(path: str) -> str:
  """The TF checkpoint prefix for `path`: the prefix itself, its `.index` or `.data-*` file, or
  the folder holding the checkpoint. Checks the weights file is there."""
  path = re.sub(r'\.(index|data-\d{5}-of-\d{5})$', '', path)
  if os.path.isdir(path):
    indexes = sorted(f for f in os.listdir(path) if f.endswith('.index'))
    if len(indexes) != 1:
      raise ConversionError(f'{path}: folder holds no single TF checkpoint (.index file)')
    path = os.path.join(path, indexes[0][:-len('.index')])
  if not os.path.isfile(path + '.index'):
    raise ConversionError(f'{path}: no TF checkpoint here (expected {path}.index and '
                          f'{path}.data-00000-of-00001, from the official PRNet Data/net-data)')
  folder = os.path.dirname(path) or '.'
  stem = os.path.basename(path)
  if not any(f.startswith(stem + '.data-') for f in os.listdir(folder)):
    raise ConversionError(
        f'{path}.index is here but not its weights file: put '
        f'{stem}.data-00000-of-00001 beside it in {folder} ({DATA_FILE_HELP})')
  return path


def _check_output(output: str, overwrite: bool) -> None:
  """Refuses to write over an existing checkpoint unless `overwrite`. Nothing is removed here:
  `checkpoints.save_variables` swaps the new step in only once it is complete."""
  step = os.path.join(os.path.abspath(output), '0')
  if not os.path.exists(step):
    return
  if not overwrite:
    raise ConversionError(f'{output} already holds a converted checkpoint; pass --overwrite to '
                          f'replace it, or choose another --output')
  if not os.path.isdir(os.path.join(step, checkpoints.VARIABLES)):
    raise ConversionError(f'{step} exists and is not a prnet_jax checkpoint step; not '
                          f'overwriting it')


def convert_checkpoint(checkpoint: str, output: str, resolution: int = OFFICIAL_RESOLUTION,
                       width: Optional[int] = None, overwrite: bool = False) -> str:
  """Reads the TF checkpoint at `checkpoint`, writes an orbax checkpoint to `output` (step 0)."""
  if resolution != OFFICIAL_RESOLUTION:
    raise ConversionError(f'--resolution={resolution} disagrees with the checkpoint: the '
                          f'official network ({SCOPE}) was trained on {OFFICIAL_RESOLUTION} px '
                          f'crops and position maps; its weights are only valid at that size')
  prefix = _checkpoint_prefix(checkpoint)
  _check_output(output, overwrite)
  try:
    reader = tf_checkpoint.TFCheckpoint(prefix)
  except tf_checkpoint.TFCheckpointError as e:
    raise ConversionError(str(e)) from e
  available = reader.shape_map()
  if width is None:
    first = available.get(f'{SCOPE}/Conv/weights')
    if first is None:
      raise ConversionError(f'{prefix}: no {SCOPE}/Conv/weights; not a PRNet checkpoint')
    width = int(first[-1])

  def get_tensor(name: str) -> np.ndarray:
    try:
      return reader.tensor(name)
    except tf_checkpoint.TFCheckpointError as e:  # short or damaged data file
      raise ConversionError(
          f'{reader.shard_path(reader.entries[name].shard)}: cannot read {name} ({e}); the '
          f'weights file is truncated or damaged: download it again ({DATA_FILE_HELP})') from e

  config = ModelConfig(resolution=resolution, width=width)
  variables = convert(get_tensor, available, PRNet.from_config(config))
  path = checkpoints.save_variables(output, variables, config, step=0)
  # The assets the official network's maps are read with: predict, eval and export take them
  # from here (checkpoints.run_config) without flags.
  checkpoints.write_run_config(output, {'uv_assets': OFFICIAL_UV_ASSETS,
                                        'converted_from': os.path.abspath(prefix)})
  return path


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--checkpoint', required=True,
                      help='TF checkpoint prefix, e.g. Data/net-data/256_256_resfcn256_weight '
                           '(or its .index file, or the folder holding it)')
  parser.add_argument('--output', required=True, help='output checkpoint directory')
  parser.add_argument('--resolution', type=int, default=OFFICIAL_RESOLUTION,
                      help='must be the checkpoint\'s (256 for the official weights)')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace a checkpoint already converted into --output')
  args = parser.parse_args(argv)
  try:
    path = convert_checkpoint(args.checkpoint, args.output, args.resolution,
                              overwrite=args.overwrite)
  except ConversionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
