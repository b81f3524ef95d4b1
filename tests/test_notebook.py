"""notebooks/quickstart.ipynb from its first cell, as on a fresh Colab runtime: a new virtual
environment with only a Jupyter kernel, whose first cell clones the project from a git
repository and installs it from the registries (the cell pins nothing; the test holds pip to
requirements.txt's versions); then it runs the bundled model on a photo and trains on the ICT
world's tiny dataset, start to end."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import SHARED_REFERENCE
from fixtures import ROOT


def _repository_copy(dest: str) -> None:
  """The working tree (tracked and untracked, not ignored files) as a new git repository, for
  the notebook's `git clone`: it tests the files as they are, committed or not."""
  files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT,
                         capture_output=True, check=True).stdout.split(b'\0')
  os.makedirs(dest)
  for name in (f.decode() for f in files if f):
    if os.path.isfile(os.path.join(ROOT, name)):  # not a file deleted from the working tree
      os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
      shutil.copyfile(os.path.join(ROOT, name), os.path.join(dest, name))
  git = ['git', '-c', 'user.name=test', '-c', 'user.email=test@localhost']
  for cmd in (['init', '-q'], ['add', '-A'], ['commit', '-q', '-m', 'copy']):
    subprocess.run(git + cmd, cwd=dest, check=True, capture_output=True)


@pytest.mark.slow(reason='a fresh virtual environment; executes the notebook (trains)')
def test_quickstart_notebook_from_its_first_cell_in_a_fresh_venv(tmp_path):
  nbformat = pytest.importorskip('nbformat')
  venv, repo, work = tmp_path / 'venv', tmp_path / 'repo', tmp_path / 'work'
  subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
  python = str(venv / 'bin' / 'python')
  r = subprocess.run([python, '-m', 'pip', 'install', '-q', 'nbclient', 'ipykernel'],
                     capture_output=True, text=True)
  assert r.returncode == 0, f'installing a Jupyter kernel failed: {r.stderr[-2000:]}'
  _repository_copy(str(repo))
  os.makedirs(work)
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
  # The cell's own unpinned `pip install`, held to the versions CI tests (pip reads
  # PIP_CONSTRAINT): a registry release must not decide this test's verdict.
  env.update(PATH=str(venv / 'bin') + os.pathsep + env.get('PATH', ''),
             PIP_CONSTRAINT=os.path.join(ROOT, 'requirements.txt'),
             VIRTUAL_ENV=str(venv), PRNET_JAX_REPO=str(repo),
             PRNET_NOTEBOOK_DIR=str(tmp_path / 'nb'), PRNET_NOTEBOOK_STEPS='20')
  photo = os.path.join(SHARED_REFERENCE, 'photos', '0.jpg')
  if os.path.isfile(photo):  # the upload cell's stand-in: a real photo (else a world face)
    env['PRNET_NOTEBOOK_PHOTO'] = photo
  else:
    env.pop('PRNET_NOTEBOOK_PHOTO', None)
  out = tmp_path / 'executed.ipynb'
  try:
    _execute_and_check(python, env, out, work, tmp_path, nbformat)
  finally:  # the environment is ~1.5 GB; pytest keeps its last temporary folders
    shutil.rmtree(venv, ignore_errors=True)


def _execute_and_check(python, env, out, work, tmp_path, nbformat):
  r = subprocess.run([python, os.path.join(ROOT, 'tests', 'run_notebook.py'),
                      os.path.join(ROOT, 'notebooks', 'quickstart.ipynb'), str(out), str(work)],
                     env=env, capture_output=True, text=True, timeout=1500)
  assert r.returncode == 0, r.stderr[-3000:]

  # The first cell cloned and installed the project into the fresh environment.
  where = subprocess.run([python, '-c', 'import prnet_jax; print(prnet_jax.__file__)'],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path))
  assert where.stdout.startswith(str(work / 'prnet-jax')), where.stdout + where.stderr
  nb = nbformat.read(str(out), as_version=4)
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  assert not [o for o in outputs if o.get('output_type') == 'error']
  text = ''.join(o.get('text', '') for o in outputs if o.get('output_type') == 'stream')
  assert '68-landmark NME (2D):' in text and 'pose (yaw, pitch, roll)' in text
  if 'PRNET_NOTEBOOK_PHOTO' in env:
    assert '1 face(s); pose (yaw, pitch, roll) of the first:' in text
  assert 'face_face0.obj' in text
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(images) >= 3  # the photo, the evaluation plots, the landmarks / depth / mesh figure
  assert os.path.exists(tmp_path / 'nb' / 'run' / 'eval' / 'synthetic_faces-ict_tiny.json')
