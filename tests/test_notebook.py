"""notebooks/quickstart.ipynb runs headless, start to end (nbclient), on the ICT world's tiny dataset."""

import os

import pytest

from conftest import SHARED_REFERENCE
from fixtures import ROOT


@pytest.mark.slow(reason='executes the notebook (trains)')
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  nb = nbformat.read(os.path.join(ROOT, 'notebooks', 'quickstart.ipynb'), as_version=4)
  monkeypatch.setenv('PRNET_NOTEBOOK_DIR', str(tmp_path))
  monkeypatch.setenv('PRNET_NOTEBOOK_STEPS', '20')
  photo = os.path.join(SHARED_REFERENCE, 'photos', '0.jpg')
  if os.path.isfile(photo):  # the upload cell's stand-in: a real photo (else a world face)
    monkeypatch.setenv('PRNET_NOTEBOOK_PHOTO', photo)
  else:
    monkeypatch.delenv('PRNET_NOTEBOOK_PHOTO', raising=False)
  monkeypatch.setenv('PYTHONPATH', ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name='python3',
                                   resources={'metadata': {'path': ROOT}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  assert not [o for o in outputs if o.get('output_type') == 'error']
  text = ''.join(o.get('text', '') for o in outputs if o.get('output_type') == 'stream')
  assert '68-landmark NME (2D):' in text and 'pose (yaw, pitch, roll)' in text
  if os.environ.get('PRNET_NOTEBOOK_PHOTO'):
    assert '1 face(s); pose (yaw, pitch, roll) of the first:' in text
  assert 'face_face0.obj' in text
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(images) >= 3  # the photo, the evaluation plots, the landmarks / depth / mesh figure
  assert os.path.exists(tmp_path / 'run' / 'eval' / 'synthetic_faces-ict_tiny.json')
