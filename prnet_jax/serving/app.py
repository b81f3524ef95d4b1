r"""A browser demo on localhost: reconstruction and face swap with the bundled model (or any).

    python -m prnet_jax.serving.app [--port=7860] [--checkpoint=pretrained] [--examples=DIR]
    # then open http://127.0.0.1:7860

One page (`prnet_jax/serving/web/index.html`, plain HTML and JavaScript, nothing fetched from the
internet) talks JSON to this server, built on the standard library's `http.server`: no web
framework to install, nothing that pins our numpy, pillow or protobuf (Gradio, the field's usual
choice, brings FastAPI, pydantic, pandas and a hub client with their own pins).

  GET  /                      the page
  GET  /api/examples          [{name, url}] example photos (--examples, plus a face of the
                              embedded ICT world rendered at start-up)
  GET  /api/example/NAME      an example photo
  POST /api/predict           {image: data URL, face?: int} -> overlay and depth (data URLs),
                              pose, 68 landmarks, the mesh for the 3D view, download links
  POST /api/swap              {source, target: data URLs, part: 'face' | 'eyes'} -> image
  GET  /api/download/ID/FILE  the .obj, .ply and .json of a prediction (the last 32 kept)

Errors come back as {error: message} with status 400 (bad input), 408 (a body that stops
arriving), 413 (body over the limit), 421 (a Host that is not this machine's loopback name while
the server listens on loopback: DNS rebinding). At most MAX_CONNECTIONS are served at once;
later clients wait in the listen queue (LISTEN_BACKLOG) until a slot frees.
Uploads are decoded at most MAX_SIDE px on their longer side (JPEGs reduced while decoding), so
a request's memory is bounded whatever the photo; pages carry a Content-Security-Policy that
allows only the page's own script and style (by hash), no framing and no other origin.
"""

from __future__ import annotations

import base64
import collections
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import io
import json
import os
import threading
import traceback
from typing import Any, Optional, Sequence
import uuid

import numpy as np

MAX_BODY = 24 * 1024 * 1024   # two phone photos as data URLs
MAX_SIDE = 2048               # uploads are decoded at most this long (the model sees ~256 px)
MAX_CONNECTIONS = 16          # served at once; more wait in the listen queue
SOCKET_TIMEOUT_S = 30         # a request (headers or body) that stops arriving is dropped
LISTEN_BACKLOG = 128
KEEP_RESULTS = 32
# The 3D view's mesh: the map resampled to this many px of its layout (~9k vertices; smooth,
# and light enough for the page's canvas renderer). Downloads use the predictor's own size.
VIEW_RESOLUTION = 128
LOOPBACK_NAMES = ('127.0.0.1', 'localhost', '[::1]')
# The server's peak memory with the bundled model: the model and detector (~1.2 GB) and at
# most MAX_CONNECTIONS requests of at most MAX_BODY, each decoded at most MAX_SIDE px, one
# forward pass at a time. tests/test_app.py checks it under 50 mixed clients at once
# (measured: 1.9 GB).
MEMORY_BOUND_BYTES = 3 * 1024 ** 3
WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'web')


class AppError(ValueError):
  """A request the demo cannot serve; the message is shown on the page."""


def _png_data_url(image) -> str:
  from PIL import Image
  buf = io.BytesIO()
  (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, 'PNG')
  return 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()


def decode_upload(data_url: Any, what: str) -> np.ndarray:
  """A data URL (or bare base64) of an image file -> (H, W, 3) uint8 RGB
  (`prnet_jax.data.image_io.load_photo`'s checks); AppError naming `what` otherwise."""
  import binascii

  from prnet_jax.data import image_io
  if not isinstance(data_url, str) or not data_url:
    raise AppError(f'{what}: no image given')
  payload = data_url.split(',', 1)[1] if data_url.startswith('data:') else data_url
  try:
    return image_io.load_photo(base64.b64decode(payload, validate=False), name=what,
                               max_side=MAX_SIDE)
  except binascii.Error as e:
    raise AppError(f'{what}: not a readable image') from e
  except image_io.ImageError as e:
    raise AppError(str(e)) from e


class Demo:
  """The model and the results kept for download; thread-safe (one forward pass at a time)."""

  def __init__(self, predictor, examples: Optional[str] = None, world_example: bool = True):
    self.predictor = predictor
    self._lock = threading.Lock()
    self._results: collections.OrderedDict[str, dict[str, bytes]] = collections.OrderedDict()
    self.examples: dict[str, bytes] = {}
    if examples:
      for name in sorted(os.listdir(examples)):
        if name.lower().endswith(('.jpg', '.jpeg', '.png')):
          with open(os.path.join(examples, name), 'rb') as f:
            self.examples[name] = f.read()
    if world_example:
      self.examples['ict_world_face.png'] = _world_face()

  def _faces(self, image: np.ndarray, what: str) -> list:
    with self._lock:
      faces = self.predictor.predict(image)
    if not faces:
      raise AppError(f'{what}: no face found')
    return faces

  def predict(self, request: dict) -> dict:
    from prnet_jax.serving import outputs
    try:  # the request's own fields first: a bad one costs no decoding
      index = int(request.get('face', 0))
    except (TypeError, ValueError, OverflowError) as e:
      raise AppError(f"face must be a face's index, got {request.get('face')!r}") from e
    image = decode_upload(request.get('image'), 'photo')
    faces = self._faces(image, 'photo')
    if not 0 <= index < len(faces):
      raise AppError(f'photo: {len(faces)} face(s) found, face {index} is out of range')
    face = faces[index]
    depth = outputs.scale_depth(outputs.depth_image(faces, *image.shape[:2]), 40, 255)
    files = self._files(face, self.predictor.dense_mesh(face, image))
    view = self.predictor.dense_mesh(face, image, VIEW_RESOLUTION)
    rid = uuid.uuid4().hex[:12]
    with self._lock:
      self._results[rid] = files
      while len(self._results) > KEEP_RESULTS:
        self._results.popitem(last=False)
    yaw, pitch, roll = (round(float(a), 1) for a in face.pose_angles_deg)
    return {
        'faces': len(faces), 'face': index,
        'pose': {'yaw': yaw, 'pitch': pitch, 'roll': roll},
        'landmarks': np.round(face.landmarks, 1).tolist(),
        'overlay': _png_data_url(outputs.overlay(image, faces)),
        'depth': _png_data_url(depth.astype(np.uint8)),
        'mesh': _mesh_json(view),
        'downloads': {k: f'/api/download/{rid}/{k}' for k in files},
    }

  def swap(self, request: dict) -> dict:
    from prnet_jax.serving import applications
    part = request.get('part', 'face')
    if part not in applications.PARTS:
      raise AppError(f"part must be one of {applications.PARTS}, got {part!r}")
    src_img = decode_upload(request.get('source'), 'source photo')
    tgt_img = decode_upload(request.get('target'), 'target photo')
    src = self._faces(src_img, 'source photo')[0]
    tgt = self._faces(tgt_img, 'target photo')[0]
    out = applications.swap_faces(src, src_img, tgt, tgt_img, self.predictor.assets, part)
    return {'image': _png_data_url(out)}

  def download(self, rid: str, name: str) -> bytes:
    with self._lock:
      files = self._results.get(rid)
    if files is None or name not in files:
      raise AppError(f'{rid}/{name}: no such result (only the last {KEEP_RESULTS} are kept)')
    return files[name]

  @staticmethod
  def _files(face, mesh) -> dict[str, bytes]:
    """The downloads: the dense mesh (`Predictor.dense_mesh`) as .obj and .ply, the face as
    JSON. (The page's 3D view draws a lighter resampling, VIEW_RESOLUTION.)"""
    import tempfile

    from prnet_jax.data import mesh_io
    out = {}
    with tempfile.TemporaryDirectory() as d:
      mesh_io.write_obj(os.path.join(d, 'f.obj'), mesh.vertices, mesh.triangles,
                        colors=mesh.colors)
      mesh_io.write_ply(os.path.join(d, 'f.ply'), mesh.vertices, mesh.triangles, mesh.colors)
      for ext in ('obj', 'ply'):
        with open(os.path.join(d, 'f.' + ext), 'rb') as f:
          out['face.' + ext] = f.read()
    out['face.json'] = json.dumps(face.to_json(), indent=1).encode()
    return out


def _mesh_json(mesh) -> dict:
  """The mesh for the page's 3D view (an `outputs.Mesh` or a Face): vertices centred and
  scaled to [-1, 1] (y up), colours as 0-255 integers, flattened."""
  v = mesh.vertices.astype(np.float64) * np.array([1, -1, 1])
  v = (v - (v.min(0) + v.max(0)) / 2) / max(np.ptp(v, 0).max() / 2, 1e-6)
  return {'vertices': np.round(v, 4).ravel().tolist(),
          'triangles': mesh.triangles.astype(int).ravel().tolist(),
          'colors': np.round(mesh.colors * 255).astype(int).ravel().tolist()}


def _world_face() -> bytes:
  """A PNG of one face of the embedded ICT world (an example that needs no photo)."""
  from PIL import Image

  from prnet_jax.worlds import ict_world
  world = ict_world.ICTWorld(ict_world.ICTWorldConfig(image_size=256, uv_resolution=64))
  sample = world.sample(3)
  buf = io.BytesIO()
  Image.fromarray(np.asarray(sample.image)).save(buf, 'PNG')
  return buf.getvalue()


def _inline_hashes(html: str, tag: str) -> list[str]:
  """CSP sources ('sha256-...') of the page's inline <tag> blocks."""
  import hashlib
  import re
  return ["'sha256-%s'" % base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
          for body in re.findall(rf'<{tag}>(.*?)</{tag}>', html, re.S)]


def security_headers(html: str) -> dict[str, str]:
  """Headers of every answer: a Content-Security-Policy that allows only the page's own inline
  script and style (by hash), images from the server and data:/blob: URLs, requests to the
  server itself, and no framing; no MIME sniffing; no referrer."""
  csp = '; '.join([
      "default-src 'none'", f"script-src {' '.join(_inline_hashes(html, 'script'))}",
      f"style-src {' '.join(_inline_hashes(html, 'style'))}", "img-src 'self' data: blob:",
      "connect-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"])
  return {'Content-Security-Policy': csp, 'X-Content-Type-Options': 'nosniff',
          'X-Frame-Options': 'DENY', 'Referrer-Policy': 'no-referrer',
          'Cross-Origin-Resource-Policy': 'same-origin'}


def make_handler(demo: Demo, loopback_only: bool = True):
  with open(os.path.join(WEB, 'index.html'), encoding='utf-8') as f:
    page = f.read()
  headers = security_headers(page)
  page_bytes = page.encode()

  class Handler(BaseHTTPRequestHandler):
    server_version = 'prnet-jax'
    sys_version = ''  # the Server header names no Python version
    timeout = SOCKET_TIMEOUT_S  # a client that stops sending loses its thread after this

    def version_string(self) -> str:
      return self.server_version

    def log_message(self, fmt, *args):  # quiet; errors are answered, not logged
      pass

    def _send(self, status: int, body: bytes, kind: str):
      self.send_response(status)
      self.send_header('Content-Type', kind)
      self.send_header('Content-Length', str(len(body)))
      self.send_header('Cache-Control', 'no-store')
      for k, v in headers.items():
        self.send_header(k, v)
      self.end_headers()
      self.wfile.write(body)

    def _json(self, status: int, obj: Any):
      self._send(status, json.dumps(obj).encode(), 'application/json')

    def _host_ok(self) -> bool:
      """On loopback, only loopback names (a page of another site that rebinds its own name to
      127.0.0.1 sends that name as Host)."""
      if not loopback_only:
        return True
      host = (self.headers.get('Host') or '').strip().lower()
      name = host.rsplit(':', 1)[0] if not host.endswith(']') else host
      if name in LOOPBACK_NAMES:
        return True
      self.close_connection = True
      self._json(HTTPStatus.MISDIRECTED_REQUEST,
                 {'error': f'Host {host!r} is not this demo (open http://127.0.0.1:PORT)'})
      return False

    def do_GET(self):  # noqa: N802
      if not self._host_ok():
        return None
      try:
        if self.path in ('/', '/index.html'):
          return self._send(200, page_bytes, 'text/html; charset=utf-8')
        if self.path == '/api/examples':
          return self._json(200, [{'name': n, 'url': f'/api/example/{n}'}
                                  for n in demo.examples])
        if self.path.startswith('/api/example/'):
          name = self.path.rsplit('/', 1)[1]
          if name not in demo.examples:
            raise AppError(f'{name}: no such example')
          kind = 'image/png' if name.lower().endswith('.png') else 'image/jpeg'
          return self._send(200, demo.examples[name], kind)
        if self.path.startswith('/api/download/'):
          parts = self.path.split('/')
          if len(parts) != 5:
            raise AppError(f'{self.path}: not a download')
          kind = 'application/json' if parts[4].endswith('.json') else 'text/plain'
          return self._send(200, demo.download(parts[3], parts[4]), kind)
        self._json(404, {'error': f'{self.path}: not found'})
      except AppError as e:
        self._json(400, {'error': str(e)})

    def _body(self) -> bytes:
      self.close_connection = True  # a bad or partial body leaves the stream unusable
      raw = self.headers.get('Content-Length')
      if raw is None or not raw.strip().isdigit():
        raise AppError(f'Content-Length must be a number of bytes, got {raw!r}')
      length = int(raw)
      if length > MAX_BODY:
        raise _TooLarge(f'request of {length / 1e6:.0f} MB is over the '
                        f'{MAX_BODY / 1e6:.0f} MB limit')
      try:
        body = self.rfile.read(length)
      except (TimeoutError, OSError) as e:
        raise _Timeout(f'the request body stopped arriving ({len(raw)} bytes announced)') from e
      if len(body) < length:
        raise AppError(f'the request body ended after {len(body)} of {length} bytes')
      self.close_connection = False
      return body

    def do_POST(self):  # noqa: N802
      if not self._host_ok():
        return None
      try:
        body = self._body()
        # Only JSON: a page of another site cannot send it without a CORS preflight, which
        # this server does not answer (its forms can send only form, multipart or text bodies).
        if (self.headers.get('Content-Type') or '').split(';')[0].strip() != 'application/json':
          raise AppError('send the request as JSON (Content-Type: application/json)')
        request = _parse_json(body)
        if not isinstance(request, dict):
          raise AppError('the request must be a JSON object')
        if self.path == '/api/predict':
          return self._json(200, demo.predict(request))
        if self.path == '/api/swap':
          return self._json(200, demo.swap(request))
        self._json(404, {'error': f'{self.path}: not found'})
      except _TooLarge as e:
        self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {'error': str(e)})
      except _Timeout as e:
        self._json(HTTPStatus.REQUEST_TIMEOUT, {'error': str(e)})
      except AppError as e:
        self._json(400, {'error': str(e)})
      except Exception as e:  # pylint: disable=broad-except  # keep serving
        from prnet_jax.serving import applications, inference
        if isinstance(e, (inference.PredictError, applications.ApplicationError)):
          return self._json(400, {'error': str(e)})
        traceback.print_exc()  # for whoever runs the server; the client learns nothing inside
        self._json(500, {'error': 'the server could not process this request'})

  return Handler


def _parse_json(body: bytes) -> Any:
  try:
    return json.loads(body or b'{}')
  except RecursionError as e:
    raise AppError('the request is not JSON (nested too deeply)') from e
  except UnicodeDecodeError as e:
    raise AppError('the request is not JSON (not UTF-8 text)') from e
  except json.JSONDecodeError as e:
    raise AppError(f'the request is not JSON ({e.msg} at line {e.lineno} column {e.colno})'
                   ) from e


class _TooLarge(AppError):
  pass


class _Timeout(AppError):
  pass


class _Server(ThreadingHTTPServer):
  """http.server's threading server with a deeper listen queue and at most MAX_CONNECTIONS
  handled at once (the rest wait, without a thread each)."""
  request_queue_size = LISTEN_BACKLOG
  daemon_threads = True

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

  def process_request(self, request, client_address):
    # Blocks the accept loop while every slot is busy: later clients wait in the listen queue
    # (no thread, no memory), and a slot frees within SOCKET_TIMEOUT_S even from stalled ones.
    self._slots.acquire()
    super().process_request(request, client_address)

  def handle_error(self, request, client_address):
    import sys
    if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
      return  # a client that went away or stalled: nothing to report
    super().handle_error(request, client_address)

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._slots.release()


def serve(demo: Demo, host: str = '127.0.0.1', port: int = 7860) -> ThreadingHTTPServer:
  """A started server (in a daemon thread); `server.server_address` has the bound port
  (pass port 0 for a free one); `server.shutdown()` stops it. On a loopback host only
  loopback Host names are answered; with another --host (serving a network) any."""
  loopback = host in ('127.0.0.1', 'localhost', '::1')
  server = _Server((host, port), make_handler(demo, loopback_only=loopback))
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse

  from prnet_jax.nn import checkpoints
  from prnet_jax.serving import detectors, inference
  p = argparse.ArgumentParser(description='The PRNet browser demo on localhost.')
  p.add_argument('--host', default='127.0.0.1')
  p.add_argument('--port', type=int, default=7860)
  p.add_argument('--checkpoint', default=checkpoints.PRETRAINED,
                 help="checkpoint directory, a run's workdir, or 'pretrained' (the default)")
  p.add_argument('--uv_assets', default=None)
  p.add_argument('--detector', default='auto', choices=detectors.NAMES)
  p.add_argument('--examples', default=None, help='a folder of example photos to offer')
  a = p.parse_args(argv)
  if a.examples and not os.path.isdir(a.examples):
    print(f'error: {a.examples}: no such folder')
    return 2
  try:
    predictor = inference.Predictor.from_checkpoint(a.checkpoint, a.uv_assets, a.detector)
    predictor.detector  # pylint: disable=pointless-statement
  except inference.PredictError as e:
    print(f'error: {e}')
    return 2
  print('loading the model and an example face ...', flush=True)
  demo = Demo(predictor, a.examples)
  try:
    server = serve(demo, a.host, a.port)
  except OSError as e:
    print(f'error: cannot listen on {a.host}:{a.port} ({e}); pick another --port')
    return 2
  host, port = server.server_address[:2]
  print(f'PRNet demo on http://{host}:{port}  (Ctrl-C stops it)', flush=True)
  try:
    threading.Event().wait()
  except KeyboardInterrupt:
    server.shutdown()
  return 0


if __name__ == '__main__':
  import sys
  sys.exit(main())
