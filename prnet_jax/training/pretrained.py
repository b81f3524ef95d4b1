"""The bundled pretrained model: a PRNet trained only on the ICT face world, shipped inside the
package as a compact float16 checkpoint (`checkpoints.PRETRAINED_FILE`, ~7 MB).

Use it by name wherever a checkpoint is taken (``--checkpoint=pretrained``), from Python with
`prnet_jax.Predictor.from_pretrained()`, or by running ``launch.py --mode=predict`` without a
checkpoint. Re-create it (README, "The pretrained model", says what it took):

  python launch.py --config=configs/prnet.py:ict --workdir=workdirs/ict
  python -m prnet_jax.training.pretrained --workdir=workdirs/ict    # writes the bundled file
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from prnet_jax.nn import checkpoints


def package(workdir: str, output: str = checkpoints.PRETRAINED_FILE,
            step: Optional[int] = None) -> str:
  """Writes checkpoint `step` (default: the newest) of the training run in `workdir` as a
  compact checkpoint carrying the run's config (so its UV assets travel with it)."""
  variables, model_config, step = checkpoints.load_variables(workdir, step)
  run = checkpoints.run_config(workdir) or {}
  return checkpoints.save_compact(output, variables, model_config, step, run)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description='Package a training run as the bundled model.')
  p.add_argument('--workdir', required=True, help="the training run's workdir")
  p.add_argument('--output', default=checkpoints.PRETRAINED_FILE)
  p.add_argument('--step', type=int, default=None, help='a saved step (default: the newest)')
  a = p.parse_args(argv)
  try:
    path = package(a.workdir, a.output, a.step)
  except checkpoints.CheckpointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
