"""The browser demo: its JSON API, and the page driven in a real headless Chromium.

The browser test needs Debian's `chromium` (.ci/run installs it) and Playwright from PyPI
(requirements-test.txt); it skips, saying which, only when one cannot be had. Screenshots go
to the test's folder, and also to $PRNET_SCREENSHOT_DIR when set (docs/app_*.png)."""

import base64
import json
import os
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from prnet_jax.serving import app


@pytest.fixture(scope='module')
def server(pretrained_predictor):
  demo = app.Demo(pretrained_predictor)
  srv = app.serve(demo, port=0)
  yield f'http://127.0.0.1:{srv.server_address[1]}', demo
  srv.shutdown()


def _post(url, body: bytes):
  try:
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=600) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _photo_path():
  from conftest import SHARED_REFERENCE
  path = os.path.join(SHARED_REFERENCE, 'aflw2000-samples', 'image00050.jpg')
  return path if os.path.exists(path) else None


def _data_url(raw: bytes) -> str:
  return 'data:image/png;base64,' + base64.b64encode(raw).decode()


def test_api_predicts_serves_downloads_and_answers_bad_requests(server):
  url, demo = server
  raw = demo.examples['ict_world_face.png']
  status, res = _post(url + '/api/predict', json.dumps({'image': _data_url(raw)}).encode())
  assert status == 200, res
  assert res['faces'] >= 1 and len(res['landmarks']) == 68
  assert set(res['pose']) == {'yaw', 'pitch', 'roll'}
  mesh = res['mesh']
  v = np.asarray(mesh['vertices']).reshape(-1, 3)
  assert np.abs(v).max() <= 1.0 + 1e-6 and len(mesh['colors']) == v.size
  assert max(mesh['triangles']) < len(v)
  with urllib.request.urlopen(url + res['downloads']['face.obj']) as r:
    obj = r.read().decode()
  # The download is the dense mesh (the map resampled to 256 px), the view the map's own.
  assert sum(line.startswith('v ') for line in obj.splitlines()) > 10 * len(v)
  with urllib.request.urlopen(url + res['downloads']['face.json']) as r:
    assert len(json.loads(r.read())['landmarks']) == 68
  # Bad input: one message each, and the server keeps serving.
  assert _post(url + '/api/predict', b'{"image": "bm90IGFuIGltYWdl"}') == (
      400, {'error': 'photo: not a readable image'})
  assert _post(url + '/api/predict', b'not json')[0] == 400
  assert _post(url + '/api/predict', json.dumps({'image': _data_url(raw), 'face': 'x'}).encode()
               ) == (400, {'error': "face must be a face's index, got 'x'"})
  assert _post(url + '/api/predict', json.dumps({'image': _data_url(raw), 'face': 5}).encode()
               )[1]['error'].endswith('face 5 is out of range')
  blank = _data_url(_png(np.full((64, 64, 3), 128, np.uint8)))
  assert _post(url + '/api/predict', json.dumps({'image': blank}).encode()) == (
      400, {'error': 'photo: no face found'})
  assert _post(url + '/api/swap', json.dumps({'source': blank, 'target': blank,
                                              'part': 'nose'}).encode())[0] == 400
  try:
    urllib.request.urlopen(url + '/api/download/nothing/face.obj')
    raise AssertionError('expected a 400')
  except urllib.error.HTTPError as e:
    assert e.code == 400 and 'no such result' in json.loads(e.read())['error']
  req = urllib.request.Request(url + '/api/predict', data=b'{}',
                               headers={'Content-Length': str(app.MAX_BODY + 1)})
  try:
    urllib.request.urlopen(req)
    raise AssertionError('expected a 413')
  except (urllib.error.HTTPError, ConnectionError) as e:
    assert getattr(e, 'code', 413) == 413


def _png(image: np.ndarray) -> bytes:
  import io

  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, 'PNG')
  return buf.getvalue()


def _chromium():
  try:
    from playwright.sync_api import sync_playwright  # noqa: F401
  except ImportError:
    pytest.skip('Playwright is not installed (pip install -r requirements-test.txt)')
  path = os.environ.get('PRNET_CHROMIUM') or shutil.which('chromium') or shutil.which(
      'chromium-browser')
  if not path:
    pytest.skip("no Chromium: install Debian's package (apt-get install chromium); "
                '.ci/run does')
  return path


# Chromium as the machine allows it: no sandbox as root, no GPU, no network of its own.
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']


def _shots(tmp_path, page, name):
  page.screenshot(path=str(tmp_path / name), full_page=True)
  extra = os.environ.get('PRNET_SCREENSHOT_DIR')
  if extra:
    os.makedirs(extra, exist_ok=True)
    shutil.copy(tmp_path / name, os.path.join(extra, name))
  return tmp_path / name


@pytest.mark.slow(reason='browser')
def test_the_page_in_headless_chromium(server, tmp_path):
  """Upload a photo, wait for the results, check the overlay and the mesh view are drawn; then
  the face-swap tab with two photos. Screenshots of both."""
  chromium = _chromium()
  from playwright.sync_api import sync_playwright
  url, demo = server
  photo = _photo_path()
  if photo is None:  # a fresh clone without ../shared: the world's example face
    photo = str(tmp_path / 'face.png')
    with open(photo, 'wb') as f:
      f.write(demo.examples['ict_world_face.png'])
  with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
    try:
      page = browser.new_page(viewport={'width': 1600, 'height': 900})
      page.goto(url, timeout=60_000)
      page.set_input_files('#file', photo)
      page.wait_for_function(
          "document.getElementById('status').textContent.startsWith('Done')", timeout=300_000)
      # The overlay and depth images decoded; the pose table filled.
      for sel in ('#overlay', '#depth'):
        assert page.eval_on_selector(sel, 'e => e.complete && e.naturalWidth') > 0, sel
      assert 'yaw' in page.inner_text('#pose')
      assert page.eval_on_selector_all('#downloads a', 'as => as.length') == 3
      # The mesh view drew the face: many canvas pixels differ from its background.
      drawn = page.eval_on_selector('#mesh', '''c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let k = 0;
        for (let i = 0; i < d.length; i += 4)
          if (Math.abs(d[i] - 236) + Math.abs(d[i + 1] - 239) + Math.abs(d[i + 2] - 241) > 30) k++;
        return k / (d.length / 4); }''')
      assert drawn > 0.1, drawn
      # Dragging turns it: the picture changes.
      before = page.eval_on_selector('#mesh', 'c => c.toDataURL()')
      box = page.locator('#mesh').bounding_box()
      page.mouse.move(box['x'] + 100, box['y'] + 180)
      page.mouse.down()
      page.mouse.move(box['x'] + 200, box['y'] + 180, steps=5)
      page.mouse.up()
      assert page.eval_on_selector('#mesh', 'c => c.toDataURL()') != before
      shot = _shots(tmp_path, page, 'app_reconstruction.png')
      assert shot.stat().st_size > 10_000
      # Face swap: onto another real photo (the world's face on a fresh clone).
      target = os.path.join(os.path.dirname(photo), 'image02616.jpg')
      if not os.path.exists(target):
        target = str(tmp_path / 'target.png')
        with open(target, 'wb') as f:
          f.write(demo.examples['ict_world_face.png'])
      page.click('#tab-swap')
      page.set_input_files('#swap-source', photo)
      page.set_input_files('#swap-target', target)
      page.click('#swap-run')
      page.wait_for_function(
          "['Done.'].includes(document.getElementById('swap-status').textContent) || "
          "document.getElementById('swap-status').className === 'error'", timeout=300_000)
      assert page.inner_text('#swap-status') == 'Done.', page.inner_text('#swap-status')
      from PIL import Image
      width = Image.open(target).width
      assert page.eval_on_selector('#swap-result', 'e => e.complete && e.naturalWidth') == width
      _shots(tmp_path, page, 'app_swap.png')
    finally:
      browser.close()
