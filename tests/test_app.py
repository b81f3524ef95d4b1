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
    request = urllib.request.Request(url, data=body,
                                     headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=600) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _photo_path():
  from conftest import SHARED_REFERENCE
  path = os.path.join(SHARED_REFERENCE, 'aflw2000-samples', 'image00050.jpg')
  return path if os.path.exists(path) else None


def _data_url(raw: bytes) -> str:
  return 'data:image/png;base64,' + base64.b64encode(raw).decode()


def _decode(raw: bytes) -> np.ndarray:
  from prnet_jax.data import image_io
  return image_io.load_photo(raw)


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
  # The download is the dense mesh (the map resampled to 256 px), the view a lighter one (128
  # px), both far finer than the 64 px model's own map (~2k vertices).
  assert len(v) > 3 * len(demo.predictor.predict(_decode(raw))[0].vertices)
  assert sum(line.startswith('v ') for line in obj.splitlines()) > 3 * len(v)
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
                               headers={'Content-Length': str(app.MAX_BODY + 1),
                                        'Content-Type': 'application/json'})
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
      # Selectors, not wait_for_function: its string predicates need eval, which the page's
      # Content-Security-Policy forbids (as it should).
      page.wait_for_selector("#status:text-matches('^Done')", timeout=300_000)
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
      page.wait_for_selector("#swap-status:text-is('Done.'), #swap-status.error",
                             timeout=300_000)
      assert page.inner_text('#swap-status') == 'Done.', page.inner_text('#swap-status')
      from PIL import Image
      width = Image.open(target).width
      assert page.eval_on_selector('#swap-result', 'e => e.complete && e.naturalWidth') == width
      _shots(tmp_path, page, 'app_swap.png')
    finally:
      browser.close()


# ---------------------------------------------------------------- hardening (no model needed)

class _NoFaces:
  """A predictor that records the images it is given and finds no face."""

  def __init__(self):
    self.shapes = []

  def predict(self, image):
    self.shapes.append(image.shape)
    return []


@pytest.fixture
def bare(monkeypatch):
  monkeypatch.setattr(app, 'MAX_CONNECTIONS', 2)
  monkeypatch.setattr(app, 'SOCKET_TIMEOUT_S', 2)
  demo = app.Demo(_NoFaces(), world_example=False)
  srv = app.serve(demo, port=0)
  yield srv.server_address[1], demo
  srv.shutdown()
  srv.server_close()


def _raw(port, data: bytes, timeout=60) -> tuple[int, dict, bytes]:
  """Sends raw bytes; (status, headers, body) of the answer."""
  import socket
  with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
    s.sendall(data)
    chunks = []
    while True:
      chunk = s.recv(65536)
      if not chunk:
        break
      chunks.append(chunk)
  head, _, body = b''.join(chunks).partition(b'\r\n\r\n')
  lines = head.decode().split('\r\n')
  headers = dict(line.split(': ', 1) for line in lines[1:])
  return int(lines[0].split()[1]), headers, body


def _request(port, body: bytes, length=None, host=None, kind='application/json',
             path='/api/predict'):
  return (f'POST {path} HTTP/1.1\r\nHost: {host or f"127.0.0.1:{port}"}\r\n'
          f'Content-Type: {kind}\r\nContent-Length: {len(body) if length is None else length}'
          f'\r\nConnection: close\r\n\r\n').encode() + body


def test_bad_requests_are_400_with_a_message_and_never_an_exception_name(bare):
  port, _ = bare
  cases = [
      (_request(port, b'{}', length='abc'),
       "Content-Length must be a number of bytes, got 'abc'"),
      (_request(port, b'{"image": '), 'the request is not JSON (Expecting value at line 1 '
                                      'column 11)'),
      (_request(port, b'--x\r\nContent-Disposition: form-data; name="image"\r\n\r\n\xff\r\n--x--',
                kind='multipart/form-data; boundary=x'),
       'send the request as JSON (Content-Type: application/json)'),
      (_request(port, b'{}', kind='text/plain'),
       'send the request as JSON (Content-Type: application/json)'),
      (_request(port, b'[' * 200000), 'the request is not JSON (nested too deeply)'),
      (_request(port, b'{"image": "\xff\xfe"}'), 'the request is not JSON (not UTF-8 text)'),
      (_request(port, b'{"image": "x", "face": 1e400}'), "face must be a face's index, got inf"),
      (_request(port, json.dumps({'image': base64.b64encode(_bomb()).decode()}).encode()),
       'photo: not a readable image'),
  ]
  for data, message in cases:
    status, headers, body = _raw(port, data)
    assert (status, json.loads(body)) == (400, {'error': message}), (data[:80], body)


def _bomb() -> bytes:
  from test_predict import png_declaring
  return png_declaring(30000, 30000)


def test_a_huge_photo_is_decoded_small(bare):
  from PIL import Image
  import io
  port, demo = bare
  buf = io.BytesIO()
  Image.fromarray(np.full((7000, 5000, 3), 90, np.uint8)).save(buf, 'JPEG', quality=20)
  body = json.dumps({'image': base64.b64encode(buf.getvalue()).decode()}).encode()
  status, _, answer = _raw(port, _request(port, body))
  assert (status, json.loads(answer)) == (400, {'error': 'photo: no face found'})
  assert demo.predictor.shapes == [(app.MAX_SIDE, round(5000 * app.MAX_SIDE / 7000), 3)]


def test_a_body_that_stops_arriving_is_dropped_and_its_slot_freed(bare):
  port, _ = bare
  status, _, body = _raw(port, _request(port, b'{"ima', length=1000))
  assert status == 408 and 'stopped arriving' in json.loads(body)['error']


def test_a_client_over_the_connection_limit_waits_for_a_slot(bare):
  """Both slots held by clients that never finish their headers: the next client is not
  reset or refused; it is answered once the stalled ones time out."""
  import socket
  port, _ = bare
  held = [socket.create_connection(('127.0.0.1', port)) for _ in range(2)]  # the 2 slots
  try:
    for s in held:
      s.sendall(b'GET / HTTP/1.1\r\n')  # headers never finished
    status, _, body = _raw(port, b'GET /api/examples HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                                 b'Connection: close\r\n\r\n')
    assert status == 200 and json.loads(body) == []
  finally:
    for s in held:
      s.close()


def test_foreign_host_names_are_refused_and_pages_carry_security_headers(bare):
  import hashlib
  port, _ = bare
  get = 'GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n'
  status, _, body = _raw(port, get.format(f'rebound.example:{port}').encode())
  assert status == 421 and 'is not this demo' in json.loads(body)['error']
  status, headers, page = _raw(port, get.format(f'localhost:{port}').encode())
  assert status == 200 and headers['Server'] == 'prnet-jax'
  csp = headers['Content-Security-Policy']
  script = page.decode().split('<script>')[1].split('</script>')[0]
  digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
  assert f"script-src 'sha256-{digest}'" in csp and "frame-ancestors 'none'" in csp
  assert 'unsafe-inline' not in csp and 'onclick=' not in page.decode()
  assert headers['X-Content-Type-Options'] == 'nosniff'


def test_many_clients_at_once_are_all_answered(pretrained_predictor):
  """A listen backlog deep enough for a burst of clients (no connection resets)."""
  import concurrent.futures
  demo = app.Demo(_NoFaces(), world_example=False)
  srv = app.serve(demo, port=0)
  url = f'http://127.0.0.1:{srv.server_address[1]}/api/examples'
  try:
    def get(_):
      with urllib.request.urlopen(url, timeout=120) as r:
        return r.status
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
      assert list(pool.map(get, range(40))) == [200] * 40
  finally:
    srv.shutdown()
    srv.server_close()


@pytest.mark.slow(reason='demo server subprocess under load')
def test_fifty_mixed_clients_at_once_on_a_live_server(tmp_path):
  """The demo as users start it (a subprocess on 127.0.0.1, the bundled model): 50 clients at
  once, with good photos, bad requests and 6000x4000 photos mixed, all get the right answer,
  none is reset, and the server's peak memory stays under app.MEMORY_BOUND_BYTES."""
  import concurrent.futures
  import io
  import socket
  import subprocess
  import sys
  import time

  from PIL import Image

  from conftest import shared_path
  from fixtures import ROOT
  photo = shared_path('aflw2000-samples', 'image00050.jpg')  # Haar finds it (fast)
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen([sys.executable, '-m', 'prnet_jax.serving.app', f'--port={port}',
                           '--detector=haar'], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  try:
    for line in proc.stdout:  # wait until it listens
      if 'PRNet demo on' in line:
        break
    else:
      raise AssertionError('the demo did not start')
    url = f'http://127.0.0.1:{port}'
    face = open(photo, 'rb').read()
    buf = io.BytesIO()
    big = np.full((4000, 6000, 3), 120, np.uint8)  # the photo 6x, on a wide canvas
    big[600:3300, 1650:4350] = np.asarray(Image.open(photo).convert('RGB').resize((2700, 2700)))
    Image.fromarray(big).save(buf, 'JPEG', quality=30)
    kinds = {
        'good': (_data_url(face), 200, None),
        'large': (base64.b64encode(buf.getvalue()).decode(), 200, None),
        'garbage': ('bm90IGFuIGltYWdl', 400, 'photo: not a readable image'),
        'bomb': (base64.b64encode(_bomb()).decode(), 400, 'photo: not a readable image'),
        'not json': (None, 400, 'the request is not JSON (Expecting value at line 1 column 1)'),
    }
    plan = ['good'] * 8 + ['large'] * 6 + ['garbage'] * 14 + ['bomb'] * 12 + ['not json'] * 10

    def client(kind):
      image, status, error = kinds[kind]
      body = b'nope' if image is None else json.dumps({'image': image}).encode()
      got_status, answer = _post(url + '/api/predict', body)
      return kind, got_status, answer

    with concurrent.futures.ThreadPoolExecutor(len(plan)) as pool:
      results = list(pool.map(client, plan))
    for kind, status, answer in results:
      _, want_status, want_error = kinds[kind]
      assert status == want_status, (kind, answer)
      if want_error:
        assert answer == {'error': want_error}, (kind, answer)
      else:
        assert answer['faces'] >= 1 and len(answer['landmarks']) == 68, kind
    with open(f'/proc/{proc.pid}/status') as f:
      peak = int(next(l for l in f if l.startswith('VmHWM:')).split()[1]) * 1024
    print(f'demo server peak memory: {peak / 1e9:.2f} GB')
    assert peak < app.MEMORY_BOUND_BYTES, f'peak {peak / 1e9:.2f} GB'
  finally:
    proc.terminate()
    proc.wait(timeout=60)
