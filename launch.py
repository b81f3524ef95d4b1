r"""prnet-jax entry point.

  python launch.py --config=configs/prnet.py[:variant] --workdir=DIR --mode=summary|train|eval|predict

The logic lives in importable modules (prnet_jax.*) so notebooks can call it directly.
"""

import logging
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from prnet_jax import model as model_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/prnet.py:small',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
_MODE = flags.DEFINE_enum('mode', 'train', ['summary', 'train', 'eval', 'predict'],
                          'What to run.')

# Modes whose modules land with later issues; a clear message beats a traceback until then.
_PENDING = {'train': 'training (issue 5)', 'eval': 'evaluation (issue 6)',
            'predict': 'prediction (issue 7)'}


def main(argv):
  # jax logs every backend it probes (libtpu, cuda) at INFO; keep the console for progress.
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/prnet.py:small')
  mode = _MODE.value
  if mode == 'summary':
    model = model_lib.PRNet.from_config(dict(config.model))
    print(f'config variant: {config.variant}')
    print(model_lib.format_layer_table(model))
    return 0
  print(f'--mode={mode}: {_PENDING[mode]} is not in this version of prnet-jax yet. '
        f'Available now: --mode=summary.', file=sys.stderr)
  return 2


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)
