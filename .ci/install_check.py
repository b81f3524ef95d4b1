"""CI: the installed package (non-editable, in a fresh venv) works from outside the repository.

Run by .ci/run with that venv's Python, from an empty folder: imports the training, evaluation,
prediction and export modules, loads the shipped ICT face model and the bundled pretrained
model (package data), makes the default face detector, finds the browser demo's page, runs
`python -m prnet_jax.serving.predict --help`, and asks for an unbuilt dataset (expects the clear
DatasetNotFoundError, not an import error).
"""

import importlib
import os
import subprocess
import sys
import tempfile

repo = sys.argv[1]
for name in ('prnet_jax.training.train', 'prnet_jax.evaluation.evaluate', 'prnet_jax.serving.predict',
             'prnet_jax.serving.export'):
  module = importlib.import_module(name)
  assert not os.path.abspath(module.__file__).startswith(os.path.abspath(repo) + os.sep), (
      f'{name} was imported from the repository ({module.__file__}), not from the install')
  print(f'import {name}: {module.__file__}')
assert 'datasets' not in sys.modules, 'prnet_jax imported a package named datasets'

import prnet_jax  # noqa: E402
from prnet_jax.faces import ict_model  # noqa: E402  (package data travels with the install)

PACKAGE = os.path.dirname(prnet_jax.__file__)
ict = ict_model.load()
assert ict_model.SHIPPED.startswith(PACKAGE), ict_model.SHIPPED
print(f'shipped ICT model: {len(ict.neutral)} vertices from {ict_model.SHIPPED}')

from prnet_jax.nn import checkpoints  # noqa: E402

_, model_config, step = checkpoints.load_variables('pretrained')
assert checkpoints.PRETRAINED_FILE.startswith(PACKAGE), checkpoints.PRETRAINED_FILE
assert prnet_jax.Predictor.__module__ == 'prnet_jax.serving.inference'  # the package's exports
print(f'bundled pretrained model: {model_config.resolution} px, width {model_config.width}, '
      f'step {step}, from {checkpoints.PRETRAINED_FILE}')

from prnet_jax.serving import app, detectors  # noqa: E402

# The default detector's model (face-recognition-models) and the demo's page travel too.
assert isinstance(detectors.get_detector('auto'), detectors.DlibCNNDetector)
assert os.path.isfile(os.path.join(app.WEB, 'index.html')), app.WEB
print(f'default detector: dlib_cnn; demo page: {os.path.join(app.WEB, "index.html")}')

r = subprocess.run([sys.executable, '-m', 'prnet_jax.serving.predict', '--help'],
                   capture_output=True, text=True, timeout=300)
assert r.returncode == 0 and '--checkpoint' in r.stdout, r.stdout + r.stderr
print('python -m prnet_jax.serving.predict --help: ok')

from prnet_jax.data import input_pipeline  # noqa: E402

empty = tempfile.mkdtemp()
try:
  input_pipeline.data_source('synthetic_faces/small', 'train', empty)
  raise AssertionError('an unbuilt dataset was read')
except input_pipeline.DatasetNotFoundError as e:
  assert 'python -m datasets.build synthetic_faces/small' in str(e), e
  print(f'unbuilt dataset: DatasetNotFoundError: {str(e).splitlines()[0]}')
print('CI: the installed package works outside the repository')
