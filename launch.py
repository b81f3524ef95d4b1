r"""prnet-jax entry point.

  python launch.py --config=configs/prnet.py[:variant] --workdir=DIR [--mode=train|eval|predict|summary]

Multi-host (TPU pod slice, SLURM, or explicit): every host runs the same command; JAX's
distributed runtime is initialised automatically on TPU pods and SLURM, or explicitly with
--coordinator_address=HOST:PORT --num_processes=N --process_id=I.
The logic lives in importable modules (prnet_jax.*) so notebooks can call it directly.
Training builds the embedded synthetic datasets on first use (`datasets.build.ensure_built`).

The script first restarts itself once in `prnet_jax.runtime.tuned_env` (faster XLA:CPU): an
XLA_FLAGS flag that runs convolutions on Eigen (PRNET_JAX_KEEP_XLA_FLAGS=1 leaves XLA_FLAGS
alone) and, on Linux with glibc >= 2.35, GLIBC_TUNABLES=glibc.malloc.hugetlb=1
(PRNET_JAX_NO_HUGEPAGES=1 turns it off).
"""

import importlib.util
import logging
import os
import runpy
import sys

# launch.py trains and evaluates: it needs the `train` extra, which a core (prediction-only)
# install lacks. Say so in one line instead of an ImportError from deep inside a library.
TRAIN_MODULES = ('ml_collections', 'optax', 'tensorflow_datasets', 'array_record', 'grain')
_missing = [m for m in TRAIN_MODULES if importlib.util.find_spec(m) is None]
if _missing:
  print(f'error: launch.py needs the `train` extra, which is not installed (missing: '
        f'{", ".join(_missing)}): pip install -r requirements.txt, or pip install '
        f'"prnet-jax[train]". Prediction alone needs neither: prnet-predict --help',
        file=sys.stderr)
  sys.exit(1)

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from prnet_jax import runtime  # noqa: E402
from prnet_jax.training import config_checks  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/prnet.py:small',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
_MODE = flags.DEFINE_enum('mode', 'train', ['summary', 'train', 'eval', 'predict'],
                          'What to run.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 for multi-process runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'eval/predict: a checkpoint directory or a run\'s workdir (ours, or '
    'converted official weights), or "untrained" for the baseline; default WORKDIR.')
_INPUT = flags.DEFINE_string('input', None, 'predict: an image, a folder of images or a video.')
_OUTPUT = flags.DEFINE_string('output', None, 'predict: output folder (default WORKDIR/predict).')
_DETECTOR = flags.DEFINE_enum('detector', 'auto', ['auto', 'dlib_cnn', 'dlib_hog', 'haar'],
                              'predict: face detector (auto: dlib_cnn if installed, else haar).')
_START_OVER = flags.DEFINE_bool(
    'start_over', False, 'train: when WORKDIR holds another run\'s checkpoints, move them and '
    'its logs to WORKDIR/previous-<time>/ and train from step 0.')
_ORACLE = flags.DEFINE_bool('oracle', False, 'eval: score the ground truth against itself '
                            '(checks the data and the protocol; NME must be 0).')



def _usage_error(lines: list[str]) -> None:
  """Exit status 2 with one line per problem (a config that cannot run is a usage error)."""
  for line in lines:
    print(f'error: {line}', file=sys.stderr)
  sys.exit(2)


def _explain_flag_error(argv: list[str], error: Exception) -> list[str]:
  """One-line reasons for a failed flag parse: an unknown config variant, or unknown
  --config.* fields with their nearest names; else the parser's own last line."""
  spec = None
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      spec = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  if spec:
    path, _, variant = spec.partition(':')
    try:
      get_config = runpy.run_path(path)['get_config']
      base = get_config(variant) if variant else get_config()
    except Exception as e:  # the config file's own complaint (unknown variant, missing file)
      return [f'--config={spec}: {e}']
    unknown = config_checks.unknown_fields(base, config_checks.override_paths(argv))
    if unknown:
      return unknown
  message = [line for line in str(error).strip().splitlines() if line.strip()]
  return [message[-1] if message else type(error).__name__]


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # absl and config_flags raise many types for bad flags
    _usage_error(_explain_flag_error(argv, e))
    raise  # unreachable


def _cluster_environment() -> bool:
  """True on multi-host TPU pods and multi-task SLURM jobs (jax auto-detects these)."""
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return (',' in hosts or int(os.environ.get('SLURM_NTASKS', '1')) > 1
          or 'MEGASCALE_COORDINATOR_ADDRESS' in os.environ)


def initialize_distributed() -> None:
  import jax
  if _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _cluster_environment():
    jax.distributed.initialize()


def _ensure_built(dataset: str, data_dir) -> None:
  """Builds a synthetic dataset on first use (process 0; the others wait), or says how to
  build one from downloaded files. The datasets/ builders are imported here only: the library
  reads built datasets without them."""
  import jax

  from datasets import build
  builder = build.make_builder(dataset, data_dir)
  if builder.is_prepared():
    return
  if jax.process_index() == 0 or getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None):
    build.ensure_built(dataset, data_dir)  # raises on every process for a manual dataset
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices('prnet_jax: dataset built')


def main(argv):
  # jax and orbax log every backend probe and checkpoint phase at INFO; keep the console for
  # progress lines (--verbosity=0 brings them back).
  if not flags.FLAGS['verbosity'].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    config = _CONFIG.value
    if config is not None:
      config.keys()  # a file that failed to load gives a placeholder that raises when used
  except Exception as e:
    _usage_error(_explain_flag_error(sys.argv, e))
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/prnet.py:small')
  problems = config_checks.bad_values(config)
  if problems:
    _usage_error(problems)
  mode = _MODE.value
  if mode == 'summary':
    from prnet_jax.nn import model as model_lib
    model = model_lib.PRNet.from_config(dict(config.model))
    print(f'config variant: {config.variant}')
    print(model_lib.format_layer_table(model))
    return 0
  if mode == 'predict':
    from prnet_jax.nn import checkpoints
    from prnet_jax.serving import inference, predict
    if not _INPUT.value:
      raise app.UsageError('--input (an image, folder or video) is required for --mode=predict')
    # Without a checkpoint or a run: the bundled pretrained model, with its own UV assets.
    checkpoint = _CHECKPOINT.value or _WORKDIR.value or checkpoints.PRETRAINED
    pretrained = checkpoint == checkpoints.PRETRAINED
    output = _OUTPUT.value or os.path.join(_WORKDIR.value or '.', 'predict')
    problem = predict.output_folder_problem(output)
    if problem:
      print(f'error: {problem}', file=sys.stderr)
      return 2
    # A checkpoint that records its UV assets (runs, converted weights) brings them; the
    # config's are for checkpoints that do not.
    own = None if pretrained else (checkpoints.run_config(checkpoint) or {}).get('uv_assets')
    try:
      predictor = inference.Predictor.from_checkpoint(
          checkpoint, None if pretrained or own else (config.uv_assets or None),
          _DETECTOR.value)
      predictor.detector  # pylint: disable=pointless-statement  # fail now if it can't be made
    except inference.PredictError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    return 1 if predict.run(predictor, _INPUT.value, output) else 0
  if not _WORKDIR.value:
    raise app.UsageError(f'--workdir is required for --mode={mode}')
  initialize_distributed()
  if mode == 'eval':
    from prnet_jax.evaluation import evaluate
    try:
      evaluate.evaluate(config, _WORKDIR.value, checkpoint=_CHECKPOINT.value,
                        oracle=_ORACLE.value)
    except evaluate.EvaluationError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    return 0
  from prnet_jax.training import train
  try:
    _ensure_built(config.dataset, config.data_dir or None)
  except FileNotFoundError as e:
    print(f'error: {e}\nTo try the pipeline without downloads, train on synthetic faces '
          f'instead:\n  python launch.py --config=configs/prnet.py:small '
          f'--workdir=workdirs/small', file=sys.stderr)
    return 1
  try:
    train.train_and_evaluate(config, _WORKDIR.value, start_over=_START_OVER.value)
  except train.TrainingError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  # Eigen convolutions and glibc huge pages for XLA:CPU (BENCHMARKS.md).
  runtime.restart_tuned()
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=_parse_flags)
