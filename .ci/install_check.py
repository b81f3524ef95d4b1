"""CI: the core install (non-editable, no extras, a fresh venv) predicts from outside the repository.

Run by .ci/run with that venv's Python, from an empty folder, with the venv's bin/ on PATH:
imports the prediction modules from the install (not the repository), checks that the `train`
extra's packages are absent and that launch.py says so in one line, loads the shipped ICT face
model and the bundled pretrained model (package data), makes the default face detector, finds
the browser demo's page, and runs `prnet-predict` (the console script) on a real photo.
"""

import glob
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile

repo = sys.argv[1]
for name in ('prnet_jax.serving.predict', 'prnet_jax.serving.app', 'prnet_jax.serving.export',
             'prnet_jax.serving.applications', 'prnet_jax.serving.convert_official'):
  module = importlib.import_module(name)
  assert not os.path.abspath(module.__file__).startswith(os.path.abspath(repo) + os.sep), (
      f'{name} was imported from the repository ({module.__file__}), not from the install')
  print(f'import {name}: {module.__file__}')
assert 'datasets' not in sys.modules, 'prnet_jax imported a package named datasets'
extra = [m for m in ('ml_collections', 'tensorflow_datasets', 'array_record', 'grain',
                     'tensorboardX', 'matplotlib') if importlib.util.find_spec(m) is not None]
assert not extra, f'the core install brought packages of the train extra: {extra}'
print('the train extra is absent')

r = subprocess.run([sys.executable, os.path.join(repo, 'launch.py'), '--config=x'],
                   capture_output=True, text=True, timeout=300)
assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
assert 'pip install "prnet-jax[train]"' in r.stderr, r.stderr
print(f'launch.py without the train extra: {r.stderr.strip()[:80]}...')

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

# A real photo: the shared reference photos beside the clone, else the README's picture.
photos = sorted(glob.glob(os.path.join(repo, '..', 'shared', 'reference', 'photos', '*.jpg')))
photo = photos[0] if photos else os.path.join(repo, 'docs', 'pretrained_photos.jpg')
out = tempfile.mkdtemp()
r = subprocess.run(['prnet-predict', f'--input={photo}', f'--output={out}'],
                   capture_output=True, text=True, timeout=600)
assert r.returncode == 0, r.stdout + r.stderr
written = sorted(os.listdir(out))
assert any(f.endswith('.obj') for f in written) and any('landmarks' in f for f in written), written
print(f'prnet-predict {os.path.basename(photo)}: {len(written)} files ({", ".join(written[:4])}, ...)')
print('CI: the core install predicts outside the repository')
