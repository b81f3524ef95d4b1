"""Predictor, writers, CLI, video and the serving export."""

import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from prnet_jax.data import image_io, mesh_io
from prnet_jax.faces.catalog import uv_assets_for
from prnet_jax.faces.face_model import MIRROR_68
from prnet_jax.geometry import transforms
from prnet_jax.nn import checkpoints
from prnet_jax.nn.model import ModelConfig, PRNet, init_variables
from prnet_jax.serving import inference, outputs, predict
from prnet_jax.worlds.procedural_world import SyntheticWorld

import configs.prnet as prnet_config
from fixtures import ROOT


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
  """A small-variant checkpoint (64 px, width 4), as a run's workdir (WORKDIR/checkpoints/0):
  every CLI and loader here takes the workdir as users pass it."""
  model_config = ModelConfig.from_mapping(dict(prnet_config.get_config('small').model))
  workdir = tmp_path_factory.mktemp('predict') / 'run'
  checkpoints.save_variables(str(workdir / 'checkpoints'), init_variables(
      PRNet.from_config(model_config), jax.random.key(1)), model_config)
  return str(workdir)


@pytest.fixture(scope='module')
def predictor(ckpt):
  return inference.Predictor.from_checkpoint(ckpt)


@pytest.mark.slow(reason='compiles several predictors')
def test_a_run_predicts_with_the_uv_assets_it_trained_with(ckpt, tmp_path):
  """Without --uv_assets a run's workdir (or its checkpoints/ folder) brings its own UV assets
  (config.json); a checkpoint without a run config falls back to 'procedural'."""
  import json
  import shutil

  from prnet_jax.faces.catalog import uv_assets_for
  run = tmp_path / 'run'
  shutil.copytree(ckpt, run)
  (run / 'config.json').write_text(json.dumps({'uv_assets': 'ict'}))
  ict, procedural = uv_assets_for('ict', 64).kpt_uv, uv_assets_for('procedural', 64).kpt_uv
  assert not np.array_equal(ict, procedural)
  for path in (run, run / 'checkpoints'):
    np.testing.assert_array_equal(inference.Predictor.from_checkpoint(str(path)).assets.kpt_uv, ict)
  # Other assets than the recorded ones are refused: they would misplace every landmark.
  with pytest.raises(inference.PredictError, match=r"was trained with UV assets 'ict'; "
                     r"'procedural' would read its position maps in another layout"):
    inference.Predictor.from_checkpoint(str(run), 'procedural')
  np.testing.assert_array_equal(
      inference.Predictor.from_checkpoint(str(run), 'ict').assets.kpt_uv, ict)
  np.testing.assert_array_equal(inference.Predictor.from_checkpoint(ckpt).assets.kpt_uv, procedural)


@pytest.fixture(scope='module')
def sample():
  return SyntheticWorld(image_size=256, uv_resolution=64).sample(11)


@pytest.mark.slow(reason='compiles a predictor')
def test_results_are_mapped_back_to_the_original_image(predictor, sample, monkeypatch):
  """A perfect network (the ground-truth map, moved into the predictor's crop) gives back the
  ground truth in the original image: crops and their inverse follow the official code."""
  lms = sample.landmarks  # 256 px image frame
  t = transforms.crop_transform(transforms.landmark_crop(lms), 64)
  truth = transforms.transform_points(t, sample.position_map.reshape(-1, 3)).reshape(64, 64, 3)
  monkeypatch.setattr(predictor, 'forward', lambda crops: truth[None].astype(np.float32))
  (face,) = predictor.predict(sample.image, landmarks=lms)
  np.testing.assert_allclose(face.crop_transform, t, rtol=1e-5)
  # z too (divided by the crop scale). The map's landmark pixels, not the landmark vertices:
  # at 64 px they differ by the UV quantisation.
  np.testing.assert_allclose(face.landmarks, predictor.assets.landmarks(sample.position_map),
                             atol=2e-3)
  np.testing.assert_allclose(face.vertices, predictor.assets.vertices(sample.position_map),
                             atol=2e-3)
  yaw, pitch, roll = face.pose_angles_deg
  assert yaw == pytest.approx(np.rad2deg(sample.pose[1]), abs=3)
  assert face.visibility.dtype == bool and 0.2 < face.visibility.mean() < 1.0
  # Colours are the image at the vertices.
  v = face.vertices[face.visibility][::50]
  pix = sample.image[np.round(v[:, 1]).astype(int), np.round(v[:, 0]).astype(int)] / 255
  assert np.median(np.abs(face.colors[face.visibility][::50] - pix)) < 0.1


def test_given_boxes_crop_by_the_official_conventions(predictor, sample, monkeypatch):
  """A given box crops like the official `PRN.process(image, image_info=[l, r, t, b])` (box
  centre, side int(1.6 x size)) unless the detector rule is asked for; the detector's own boxes
  always use the detector rule."""
  monkeypatch.setattr(predictor, 'forward', lambda crops: crops * 0.0 + np.float32(1))
  (face,) = predictor.predict(sample.image, boxes=[(60, 50, 180, 170)])
  official = transforms.CropBox(np.array([120.0, 110.0]), float(int(1.6 * 120)))
  np.testing.assert_allclose(face.crop_transform, transforms.crop_transform(official, 64),
                             rtol=1e-6)
  (face,) = predictor.predict(sample.image, boxes=[(60, 50, 180, 170)],
                              box_convention='detector')
  detector = transforms.CropBox(np.array([120.0, 110 + 0.14 * 120]), float(int(1.58 * 120)))
  np.testing.assert_allclose(face.crop_transform, transforms.crop_transform(detector, 64),
                             rtol=1e-6)
  monkeypatch.setattr(predictor, '_detector', lambda image: np.array([[60, 50, 180, 170.0]]))
  (face,) = predictor.predict(sample.image)
  np.testing.assert_allclose(face.crop_transform, transforms.crop_transform(detector, 64),
                             rtol=1e-6)
  with pytest.raises(inference.PredictError, match='box_convention must be one of'):
    predictor.predict(sample.image, boxes=[(60, 50, 180, 170)], box_convention='dlib')


def test_the_network_sees_the_float_crop(predictor, sample, monkeypatch):
  """As in the official code, the bilinear crop goes to the network unrounded."""
  seen = {}
  monkeypatch.setattr(predictor, 'forward',
                      lambda crops: seen.setdefault('c', crops) * 0.0 + np.float32(1))
  (face,) = predictor.predict(sample.image, boxes=[(61.3, 50.7, 180.2, 170.9)])
  expected = np.asarray(transforms.warp_image(sample.image.astype(np.float32),
                                            face.crop_transform.astype(np.float64), 64, 64))
  assert seen['c'].dtype == np.float32
  np.testing.assert_allclose(seen['c'][0], expected, atol=1e-3)
  assert np.abs(seen['c'] - np.round(seen['c'])).max() > 0.1  # not rounded to integers


def test_input_forms(predictor, sample):
  img = sample.image
  rgb = image_io.load_photo(img)
  np.testing.assert_array_equal(image_io.load_photo(img[..., ::-1], 'BGR'), rgb)
  np.testing.assert_array_equal(image_io.load_photo(img / 255.0), rgb)
  assert image_io.load_photo(img[..., 0]).shape == img.shape
  rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], -1)
  np.testing.assert_array_equal(image_io.load_photo(rgba), rgb)
  for bad, why in ((np.zeros((0, 10, 3), np.uint8), 'at least 8x8'),
                   (np.zeros((20, 20, 5), np.uint8), 'channels')):
    with pytest.raises(image_io.ImageError, match=why):
      image_io.load_photo(bad)
  with pytest.raises(image_io.ImageError, match='file not found'):
    image_io.load_photo('/nonexistent/photo.jpg')


def test_huge_and_tiny_image_files_are_refused_with_a_message(tmp_path, monkeypatch):
  monkeypatch.setattr(image_io, 'MAX_PIXELS', 100 * 100)
  Image.fromarray(np.zeros((120, 120, 3), np.uint8)).save(tmp_path / 'big.png')
  with pytest.raises(image_io.ImageError, match='big.png: image too large'):
    image_io.load_photo(str(tmp_path / 'big.png'))
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'tiny.png')
  with pytest.raises(image_io.ImageError, match='tiny.png: not an image of at least 8x8'):
    image_io.load_photo(str(tmp_path / 'tiny.png'))
  # Encoded bytes (uploads) read like the file they came from; undecodable bytes are named.
  buf = io.BytesIO()
  Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(buf, 'PNG')
  assert image_io.load_photo(buf.getvalue(), name='upload').shape == (16, 24, 3)
  with pytest.raises(image_io.ImageError, match='^upload: not a readable image$'):
    image_io.load_photo(b'not an image', name='upload')


def test_the_predictor_reports_a_bad_image_as_a_predict_error(predictor):
  with pytest.raises(inference.PredictError, match='/nonexistent/photo.jpg: file not found'):
    predictor.predict('/nonexistent/photo.jpg')


def test_all_faces_of_several_images_share_one_forward_pass(predictor, sample, monkeypatch):
  calls = []
  real = predictor.forward
  monkeypatch.setattr(predictor, 'forward', lambda crops: calls.append(len(crops)) or real(crops))
  images = [sample.image, sample.image[:, ::-1].copy(), sample.image]
  boxes = [[(40, 40, 200, 200), (10, 10, 90, 90)], [(40, 40, 200, 200)], []]
  faces = predictor.predict_batch(images, boxes)
  assert calls == [3] and [len(f) for f in faces] == [2, 1, 0]
  alone = predictor.predict(sample.image, boxes=[(10, 10, 90, 90)])[0]
  np.testing.assert_allclose(faces[0][1].landmarks, alone.landmarks, rtol=1e-5, atol=1e-3)


def mean_face_forward(predictor):
  """A stand-in network that outputs the frontal mean face in every crop (an untrained
  network outputs a constant map: a degenerate, zero-area mesh)."""
  a = predictor.assets
  pos = np.zeros((a.resolution ** 2, 3), np.float32)
  pos[a.face_indices] = a.canonical_vertices
  pos = pos.reshape(a.resolution, a.resolution, 3)
  return lambda crops: np.repeat(pos[None], len(crops), 0)


@pytest.mark.slow(reason='CNN face detector on real photos')
def test_real_photos_detected_and_every_writer_valid(predictor, tmp_path, monkeypatch):
  from conftest import shared_path
  folder = shared_path('photos')
  monkeypatch.setattr(predictor, 'forward', mean_face_forward(predictor))
  for name in sorted(os.listdir(folder)):
    image = image_io.load_photo(os.path.join(folder, name))
    boxes = predictor.detector(image)
    assert len(boxes) >= 1, name
    faces = predictor.predict(image)
    files = outputs.write_outputs(faces, image, str(tmp_path / name[:-4]))
    for f in files:
      assert os.path.getsize(f) > 0, f
    n = len(predictor.assets.face_indices)
    for obj in (f'{name[:-4]}_face0.obj', f'{name[:-4]}_face0_textured.obj'):
      mesh = mesh_io.load_obj(str(tmp_path / obj))
      assert mesh.vertices.shape == (n, 3) and len(mesh.triangles) == len(faces[0].triangles)
    ply = (tmp_path / f'{name[:-4]}_face0.ply').read_text().splitlines()
    assert f'element vertex {n}' in ply and len(ply) == ply.index('end_header') + 1 + n + \
        len(faces[0].triangles)
    assert np.loadtxt(tmp_path / f'{name[:-4]}_face0_landmarks.txt').shape == (68, 3)
    pose = json.loads((tmp_path / f'{name[:-4]}_face0_pose.json').read_text())
    assert set(pose) == {'yaw_deg', 'pitch_deg', 'roll_deg', 'camera_matrix'}
    with Image.open(tmp_path / f'{name[:-4]}_depth.png') as d:
      assert d.size == image.shape[1::-1] and np.asarray(d).max() > 1000
    with Image.open(tmp_path / f'{name[:-4]}_overlay.png') as o:
      assert o.size == image.shape[1::-1]


@pytest.mark.slow(reason='CLI subprocesses')
def png_declaring(width: int, height: int) -> bytes:
  """A small PNG file whose header declares width x height (a decompression bomb's header)."""
  import struct
  import zlib
  buf = io.BytesIO()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, 'PNG')
  data = bytearray(buf.getvalue())
  ihdr = 8  # after the signature: length, b'IHDR', 13 bytes, CRC
  data[ihdr + 8:ihdr + 16] = struct.pack('>II', width, height)
  data[ihdr + 21:ihdr + 25] = struct.pack('>I', zlib.crc32(bytes(data[ihdr + 4:ihdr + 21])))
  return bytes(data)


def test_cli_reports_bad_files_and_processes_the_rest(ckpt, tmp_path, sample):
  inp = tmp_path / 'in'
  inp.mkdir()
  Image.fromarray(sample.image).save(inp / 'face.png')
  (inp / 'notes.txt').write_text('not an image')
  Image.fromarray(np.full((64, 64, 3), 127, np.uint8)).save(inp / 'blank.png')
  (inp / 'cut.jpg').write_bytes(open(inp / 'face.png', 'rb').read()[:300])
  (inp / 'bomb.png').write_bytes(png_declaring(30000, 30000))
  r = subprocess.run([sys.executable, '-m', 'prnet_jax.serving.predict', f'--checkpoint={ckpt}',
                      f'--input={inp}', f'--output={tmp_path / "out"}'], cwd=ROOT,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 1, r.stdout + r.stderr
  out = r.stdout
  assert 'notes.txt: not a readable image' in out and 'blank.png: no face found' in out
  assert 'cut.jpg: not a readable image' in out and 'Traceback' not in r.stderr
  assert 'bomb.png: not a readable image' in out and 'decompression bomb' in out
  assert '1 of 5 inputs done' in out and 'face.png' in out  # the good file is still processed
  # launch.py --mode=predict is the same code path.
  r = subprocess.run([sys.executable, 'launch.py', '--config=configs/prnet.py:small',
                      '--mode=predict', f'--checkpoint={ckpt}', f'--input={inp / "notes.txt"}',
                      f'--output={tmp_path / "out2"}'], cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 1 and 'not a readable image' in r.stdout


def test_video_frames_in_batches(predictor, sample, tmp_path):
  import cv2
  path = str(tmp_path / 'clip.mp4')
  w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 10, (256, 256))
  for k in range(5):
    w.write(np.ascontiguousarray(np.roll(sample.image, 3 * k, axis=1)[..., ::-1]))
  w.release()
  n = predict.predict_video(predictor, path, str(tmp_path), batch=2)
  assert n == 5
  rows = [json.loads(l) for l in open(tmp_path / 'clip_frames.jsonl')]
  assert [r['frame'] for r in rows] == list(range(5))
  (video,) = [f for f in os.listdir(tmp_path) if f.startswith('clip_overlay.')]
  assert video in ('clip_overlay.mp4', 'clip_overlay.webm')  # a browser-playable codec first
  cap = cv2.VideoCapture(str(tmp_path / video))
  read = 0
  while cap.read()[0]:
    read += 1
  cap.release()
  assert read == 5


def test_a_truncated_video_is_reported_with_the_frames_it_had(predictor, tmp_path, capsys):
  import cv2
  path = tmp_path / 'clip.avi'
  w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (96, 96))
  rng = np.random.default_rng(0)
  for _ in range(20):  # noise: every frame about as large as the others
    w.write(rng.integers(0, 256, (96, 96, 3)).astype(np.uint8))
  w.release()
  whole = path.read_bytes()
  cut = tmp_path / 'in'
  cut.mkdir()
  (cut / 'cut.avi').write_bytes(whole[:len(whole) * 6 // 10])
  (cut / 'whole.avi').write_bytes(whole)
  assert predict.run(predictor, str(cut), str(tmp_path / 'out'), batch=4) == 1
  out = capsys.readouterr().out
  assert f'cut.avi: only ' in out and 'of the 20 frames it declares could be read' in out
  assert 'whole.avi: 20 frames' in out
  assert out.rstrip().splitlines()[-1].startswith('1 of 2 inputs done, 0 skipped, 1 incomplete')
  read = sum(1 for _ in open(tmp_path / 'out' / 'cut_frames.jsonl'))
  assert 0 < read < 20 and f'cut.avi: {read} frames, incomplete' in out


def test_cli_refuses_a_batch_or_redetect_interval_below_one(tmp_path, capsys):
  assert predict.main(['--input', str(tmp_path), '--output', str(tmp_path / 'o'),
                       '--redetect_every', '0']) == 2
  assert capsys.readouterr().out.strip().endswith(
      'error: --batch and --redetect_every must be at least 1')


def test_an_output_that_cannot_be_a_folder_is_refused_before_the_model_loads(tmp_path, capsys,
                                                                            monkeypatch):
  from prnet_jax.serving import applications

  def no_model(*args, **kwargs):
    raise AssertionError('the model was loaded')
  monkeypatch.setattr(inference.Predictor, 'from_checkpoint', no_model)
  (tmp_path / 'file').write_text('x')
  assert predict.main(['--input', str(tmp_path), '--output', str(tmp_path / 'file')]) == 2
  assert capsys.readouterr().out.strip() == (
      f'error: --output={tmp_path / "file"} is a file, not a folder')
  under_a_file = tmp_path / 'file' / 'sub'
  assert applications.main(['frontalize', f'--input={tmp_path}',
                           f'--output={under_a_file}']) == 2
  assert capsys.readouterr().out.strip().startswith(
      f'error: --output={under_a_file}: cannot create it')


def test_video_tracks_faces_between_detections(predictor, sample, tmp_path, monkeypatch):
  """The detector runs on the first batch, every `redetect_every` frames and after a batch
  without faces; other frames are cropped around the previous batch's last landmarks."""
  import cv2
  path = str(tmp_path / 'clip.mp4')
  w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 10, (256, 256))
  for k in range(9):
    w.write(np.ascontiguousarray(np.roll(sample.image, 2 * k, axis=1)[..., ::-1]))
  w.release()
  calls = []

  def detector(image):
    calls.append(len(calls))
    # Nothing in the first two frames (the first batch): the next batch detects again.
    return np.zeros((0, 4)) if len(calls) <= 2 else np.array([[60, 50, 190, 200.0]])

  monkeypatch.setattr(predictor, '_detector', detector)
  monkeypatch.setattr(predictor, 'forward', mean_face_forward(predictor))  # a proper face
  n = predict.predict_video(predictor, path, str(tmp_path), batch=2, redetect_every=4,
                            smooth=False)  # the tracked crops follow the raw landmarks
  assert n == 9
  rows = [json.loads(l) for l in open(tmp_path / 'clip_frames.jsonl')]
  # Batches [0 1] detect (none found), [2 3] detect, [4 5] track, [6 7] detect (4 frames
  # since), [8] tracks.
  assert len(calls) == 6
  assert [len(r['faces']) for r in rows] == [0, 0] + [1] * 7
  for tracked, previous in ((4, 3), (5, 3), (8, 7)):
    lm = np.asarray(rows[previous]['faces'][0]['landmarks'])[:, :2]
    np.testing.assert_allclose(rows[tracked]['faces'][0]['box'],
                               [*lm.min(0), *lm.max(0)], rtol=1e-5)
  for detected in (2, 3, 6, 7):
    np.testing.assert_allclose(rows[detected]['faces'][0]['box'], [60, 50, 190, 200])


@pytest.mark.slow(reason='export subprocess')
def test_export_reloads_without_flax_and_matches(ckpt, tmp_path):
  out = str(tmp_path / 'prnet.jaxexport')
  r = subprocess.run([sys.executable, '-m', 'prnet_jax.serving.export', f'--checkpoint={ckpt}',
                      f'--output={out}'], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
  np.save(tmp_path / 'x.npy', images)
  code = ('import sys; sys.modules["flax"] = None\n'  # any Flax import would now fail
          'import numpy as np\nfrom prnet_jax.serving.export import load\n'
          f'f = load({out!r}); x = np.load({str(tmp_path / "x.npy")!r})\n'
          f'np.save({str(tmp_path / "y.npy")!r}, np.asarray(f(x)))\n'
          'assert np.asarray(f(x[:1])).shape == (1, 64, 64, 3)\n')
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  variables, model_config, _ = checkpoints.load_variables(ckpt)
  model = PRNet.from_config(model_config)
  ref = np.asarray(jax.jit(lambda v, x: model.apply(v, x / 255.0, train=False))(variables,
                                                                               images))
  got = np.load(tmp_path / 'y.npy')
  assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_a_failed_export_leaves_the_previous_file(tmp_path):
  from prnet_jax.serving import export

  class Unserializable:
    def serialize(self):
      raise RuntimeError('cannot serialize')

  path = tmp_path / 'prnet.jaxexport'
  path.write_bytes(b'the previous export')
  with pytest.raises(RuntimeError, match='cannot serialize'):
    export.save(str(path), Unserializable(), [np.zeros(3)], {})
  assert path.read_bytes() == b'the previous export'
  assert os.listdir(tmp_path) == ['prnet.jaxexport']


@pytest.mark.slow(reason='memory probe subprocess')
def test_memory_stays_bounded_for_an_untrained_network_on_real_photos(monkeypatch, tmp_path):
  """An untrained full-size network's position maps are not smooth: their meshes' triangles are
  huge and scattered. The z-buffers (visibility, depth image) must still test at most
  render.BUDGET_PER_PIXEL pixel centres per output pixel (memory bounded by the image size),
  and every output is still written."""
  from prnet_jax.geometry import render

  from conftest import shared_path
  photos = shared_path('photos')
  model_config = ModelConfig()  # the official 256 px network, untrained
  model = PRNet.from_config(model_config)
  predictor = inference.Predictor(model, init_variables(model, jax.random.key(5)),
                                uv_assets_for('procedural', 256))
  real = render.rasterize
  seen = []

  def bounded(vertices, triangles, height, width, bbox):
    w = bbox if isinstance(bbox, render.Windows) else render.Windows(bbox)
    tested = (len(triangles) - w.num_big) * w.small ** 2 + w.num_big * w.big ** 2
    seen.append(tested / (height * width))
    assert tested <= render.BUDGET_PER_PIXEL * height * width, (w, height, width)
    return real(vertices, triangles, height, width, bbox)
  monkeypatch.setattr(render, 'rasterize', bounded)
  assert predict.run(predictor, photos, str(tmp_path / 'untrained')) == 0
  # Whatever the network outputs: position maps of uniform noise over the crop.
  noise = np.random.default_rng(0)
  monkeypatch.setattr(predictor, 'forward', lambda crops: noise.uniform(
      0, 256, crops.shape[:1] + (256, 256, 3)).astype(np.float32))
  assert predict.run(predictor, photos, str(tmp_path / 'noise')) == 0
  assert len(seen) >= 8  # visibility and depth of at least one face per photo, twice
  for run in ('untrained', 'noise'):
    for name in sorted(os.listdir(photos)):
      stem = os.path.splitext(name)[0]
      assert (tmp_path / run / f'{stem}_depth.png').exists()
      assert (tmp_path / run / f'{stem}_overlay.png').exists()
  # Without the budget the noise meshes ask for far more (what the budget prevents).
  image = image_io.load_photo(os.path.join(photos, sorted(os.listdir(photos))[0]))
  face = predictor.predict(image)[0]
  need = render.triangle_windows(face.vertices, face.triangles).astype(np.float64)
  assert (need ** 2).sum() > 10 * render.BUDGET_PER_PIXEL * image.shape[0] * image.shape[1]


def test_antialias_low_passes_only_crops_that_shrink(predictor, monkeypatch):
  """A one-pixel checkerboard shrunk 4x aliases to a pattern under the bilinear crop; the
  low-pass gives its mean grey. Crops that enlarge are the same either way."""
  seen = []
  r = predictor.model.resolution
  monkeypatch.setattr(predictor, 'forward', lambda c: (seen.append(c), np.zeros(
      c.shape[:3] + (3,), np.float32))[1])
  board = ((np.indices((4 * r, 4 * r)).sum(0) % 2) * 255).astype(np.uint8)
  board = np.repeat(board[..., None], 3, -1)
  small = np.full((r // 2, r // 2, 3), 128, np.uint8)
  small[::2, ::2] = 0
  for antialias in (False, True):
    monkeypatch.setattr(predictor, 'antialias', antialias)
    predictor.predict_batch([board, small], boxes=[[[0, 0, 4 * r, 4 * r]],
                                                   [[0, 0, r // 2, r // 2]]])
  (aliased, big0), (filtered, big1) = seen[0], seen[1]
  inner = (slice(r // 3, -r // 3), slice(r // 3, -r // 3))
  assert aliased[inner].std() > 20 and filtered[inner].std() < 3
  assert abs(filtered[inner].mean() - 127.5) < 5
  np.testing.assert_array_equal(big0, big1)


@pytest.mark.slow(reason='CNN face detector on real photos')
def test_the_pretrained_model_on_real_photos_finds_the_face_parts(pretrained_predictor):
  """The bundled model, detector boxes, real portraits: in the face's own frame, brows above
  the eyes, eyes level and above the nose, the nose above the mouth, the mouth above the chin,
  and on the frontal portrait the jaw's ends either side of the eyes, the eyes level."""
  from conftest import shared_path
  folder = shared_path('photos')
  p = pretrained_predictor
  assert p.antialias and p.refine == 1 and p.model.resolution == 64
  for name in sorted(os.listdir(folder)):
    faces = p.predict(os.path.join(folder, name))
    assert faces, name
    face = max(faces, key=lambda f: np.ptp(f.landmarks[:, 0]))
    lm = face.landmarks[:, :2]
    # In the face's own frame (heads tilt): "down" from the eyes' centre to the mouth's.
    down = lm[48:68].mean(0) - lm[36:48].mean(0)
    down /= np.linalg.norm(down)
    across = np.array([-down[1], down[0]])
    d = lambda s: (lm[s] @ down).mean()
    eyes, nose, mouth, brows = slice(36, 48), slice(27, 36), slice(48, 68), slice(17, 27)
    assert d(brows) < d(eyes) < d(nose) < d(mouth) < lm[8] @ down, name
    if name == '0.jpg':  # the frontal portrait (3.jpg is a profile: both jaw ends behind the eyes)
      a = lm @ across
      assert min(a[0], a[16]) < a[36:48].min() and max(a[0], a[16]) > a[36:48].max(), name
      assert abs(d(slice(36, 42)) - d(slice(42, 48))) < 0.15 * np.ptp(a), name  # eyes level


# photos/3.jpg (384 x 384, a left profile on a black backdrop), points placed by hand: the nose
# tip, the eyes (the hidden one lies behind the nose bridge), the mouth's centre, the chin.
PROFILE_POINTS = {'nose tip': (100, 243), 'eyes': (138, 193), 'mouth': (128, 272),
                  'chin': (150, 316)}


def test_the_pretrained_model_on_a_far_profile_on_black(pretrained_predictor):
  """A face turned ~80 degrees to the left in front of a black backdrop: the face is read the
  right way round (nose in front of the eyes and the jaw, a far profile), and the nose tip,
  eyes, mouth and chin land on average within 12% of the face's size of where they are, each
  within 20% (a face read the wrong way round puts them on the ear and cheek: ~75%)."""
  from conftest import PROFILE_BOX, shared_path
  p = pretrained_predictor
  faces = p.predict(shared_path('photos', '3.jpg'))
  assert len(faces) == 1
  face = faces[0]
  lm = face.landmarks[:, :2]
  assert lm[30, 0] < lm[36:48, 0].mean() < lm[0:17, 0].mean(), lm[:, 0]
  assert face.pose_angles_deg[0] > 45, face.pose_angles_deg
  got = {'nose tip': lm[30], 'eyes': lm[36:48].mean(0), 'mouth': lm[48:68].mean(0),
         'chin': lm[8]}
  left, top, right, bottom = PROFILE_BOX
  size = np.sqrt((right - left) * (bottom - top))
  errors = {k: float(np.linalg.norm(got[k] - PROFILE_POINTS[k]) / size) for k in got}
  assert np.mean(list(errors.values())) < 0.12 and max(errors.values()) < 0.2, errors


@pytest.mark.slow(reason='launch.py subprocess')
def test_launch_predicts_with_the_pretrained_model_without_a_checkpoint(tmp_path, sample):
  Image.fromarray(sample.image).save(tmp_path / 'face.png')
  out = tmp_path / 'out'
  r = subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'),
                      '--config=configs/prnet.py', '--mode=predict', '--detector=haar',
                      f'--input={tmp_path / "face.png"}', f'--output={out}'],
                     capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert r.returncode == 0, r.stdout + r.stderr
  lm = np.loadtxt(out / 'face_face0_landmarks.txt')
  assert lm.shape == (68, 3)
  # The bundled model's assets (ICT, 64 px): its map resampled to 256 px of the ICT face's UV
  # layout (the pixels read from the 64 px face pixels only).
  mesh = mesh_io.load_obj(str(out / 'face_face0.obj'))
  assert len(uv_assets_for('ict', 64).face_indices) * 14 < len(mesh.vertices) <= len(
      uv_assets_for('ict', 256).face_indices)


def test_refine_recrops_around_the_predicted_landmarks(predictor, sample, monkeypatch):
  monkeypatch.setattr(predictor, 'forward', mean_face_forward(predictor))
  box = [[40, 50, 200, 230]]
  first = predictor.predict(sample.image, boxes=box)[0]
  monkeypatch.setattr(predictor, 'refine', 1)
  again = predictor.predict(sample.image, boxes=box)[0]
  expected = transforms.crop_transform(transforms.landmark_crop(first.landmarks),
                                     predictor.model.resolution)
  np.testing.assert_allclose(again.crop_transform, expected, rtol=1e-5, atol=1e-3)
  assert not np.allclose(again.crop_transform, first.crop_transform, atol=1e-2)
  # Given landmarks are the landmark crop already: no refinement.
  given = predictor.predict(sample.image, landmarks=sample.landmarks[:, :2])[0]
  np.testing.assert_allclose(given.crop_transform, transforms.crop_transform(
      transforms.landmark_crop(sample.landmarks), predictor.model.resolution), atol=1e-3)


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
  """The README's Python example, on a real photo: the names it imports exist, and it writes
  what it says it writes."""
  from conftest import shared_path
  photo = shared_path('photos', '0.jpg')
  readme = open(os.path.join(ROOT, 'README.md')).read()
  code = readme.split('## Predict on your photo')[1].split('```python\n')[1].split('```')[0]
  assert "'photo.jpg'" in code and 'write_outputs' in code
  monkeypatch.chdir(tmp_path)
  exec(compile(code.replace("'photo.jpg'", repr(photo)), 'README.md', 'exec'), {})  # pylint: disable=exec-used
  assert (tmp_path / 'out' / 'photo_face0.obj').exists()
  assert (tmp_path / 'out' / 'photo_overlay.png').exists()


# ------------------------------------------------------------------------ test-time passes

def test_the_mirror_permutation_renames_points_of_a_mirrored_face():
  from prnet_jax.faces import ict_model
  np.testing.assert_array_equal(MIRROR_68[MIRROR_68], np.arange(68))      # an involution
  ict = ict_model.load()
  lm = ict.neutral.astype(np.float64)[ict.landmarks]
  mirrored = lm * [-1, 1, 1]
  # ICT's neutral face is near symmetric: the mirrored face's renamed points are its own.
  assert np.abs(mirrored[MIRROR_68] - lm).max() < 0.3    # cm, on a face ~15 cm wide
  shuffled = MIRROR_68.copy()
  shuffled[[36, 39]] = shuffled[[39, 36]]
  assert np.abs(mirrored[shuffled] - lm).max() > 1.0


def test_in_plane_angle_of_a_turned_face():
  assets = uv_assets_for('ict', 64)
  c = assets.canonical_vertices.astype(np.float64)
  for yaw in (0.0, 40.0):
    r3 = transforms.angles_to_matrix(np.deg2rad([10.0, yaw, 0.0]))
    posed = ((c - c.mean(0)) * [1, -1, 1]) @ r3.T * [1, -1, 1]
    for angle in (-100.0, -30.0, 0.0, 45.0, 170.0):
      t = transforms.similarity(1.3, np.deg2rad(angle), (200.0, 150.0))
      got = np.rad2deg(inference.in_plane_angle(c, transforms.transform_points(t, posed)))
      assert abs((got - angle + 180) % 360 - 180) < 3.0, (yaw, angle, got)


def world_face(seed=3):
  from prnet_jax.worlds.ict_world import ICTWorld
  s = ICTWorld().sample(seed)
  return s.image, s.landmarks


def nme(pred, gt):
  box = np.sqrt(np.ptp(gt[:, 0]) * np.ptp(gt[:, 1]))
  return float(np.linalg.norm(pred[:, :2] - gt[:, :2], axis=1).mean() / box)


def test_flip_averages_the_crop_and_the_mirrored_photos_landmarks(pretrained_predictor):
  import copy
  image, gt = world_face()
  plain, flip = copy.copy(pretrained_predictor), copy.copy(pretrained_predictor)
  plain.upright = flip.upright = False
  plain.flip, flip.flip = False, True
  plain.landmark_correction = flip.landmark_correction = None  # (fitted for real photos)
  w = image.shape[1]
  a = plain.predict(image, landmarks=gt[:, :2])[0]
  gt_m = gt[:, :2] * [-1, 1] + [w - 1, 0]
  b = plain.predict(np.ascontiguousarray(image[:, ::-1]), landmarks=gt_m)[0].landmarks
  b = (b * [-1, 1, 1] + [w - 1, 0, 0])[MIRROR_68]
  both = flip.predict(image, landmarks=gt[:, :2])[0]
  np.testing.assert_allclose(both.landmarks[:, :2], (a.landmarks[:, :2] + b[:, :2]) / 2, atol=0.05)
  # The mesh and map are the crop's own.
  np.testing.assert_array_equal(both.position_map, a.position_map)


def test_upright_reads_a_face_turned_60_degrees_like_an_upright_one(pretrained_predictor):
  """Beyond the rolls it trained on (the world's 30 degrees and 30 more of augmentation) the
  model misreads a turned face; the upright pass turns the crop back by the first pass's
  in-plane angle. (It needs that angle roughly right: a face on its side stays misread.)"""
  import copy

  import cv2
  image, gt = world_face(7)
  plain, upright = copy.copy(pretrained_predictor), copy.copy(pretrained_predictor)
  plain.flip = upright.flip = False
  plain.upright, upright.upright = False, True
  plain.landmark_correction = upright.landmark_correction = None  # (fitted for real photos)
  h, w = image.shape[:2]
  m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 60, 1.0)
  turned = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR)
  gt_t = gt[:, :2] @ m[:, :2].T + m[:, 2]
  upright_err = nme(plain.predict(image, landmarks=gt[:, :2])[0].landmarks, gt)
  turned_plain = nme(plain.predict(turned, landmarks=gt_t)[0].landmarks, gt_t)
  turned_upright = nme(upright.predict(turned, landmarks=gt_t)[0].landmarks, gt_t)
  assert turned_upright < upright_err + 0.03 and turned_plain > 2 * turned_upright, (
      upright_err, turned_plain, turned_upright)


def mesh_edges(vertices, triangles):
  """(3T,) 2D length of every triangle edge of a mesh in the image."""
  v = np.asarray(vertices, np.float64)[:, :2]
  return np.concatenate([np.linalg.norm(v[triangles[:, i]] - v[triangles[:, (i + 1) % 3]],
                                        axis=1) for i in range(3)])


@pytest.mark.slow(reason='CNN face detector on real photos')
def test_the_pretrained_meshes_of_real_photos_have_no_strips(pretrained_predictor):
  """A whole forehead: no triangle of the predicted face mesh, nor of the dense mesh written to
  files, is stretched into a strip (an edge over 5x the median edge; the map's ragged top rows
  once gave edges of 8-9x)."""
  from conftest import shared_path
  folder = shared_path('photos')
  for name in sorted(os.listdir(folder)):
    image = image_io.load_photo(os.path.join(folder, name))
    for face in pretrained_predictor.predict(image):
      dense = pretrained_predictor.dense_mesh(face, image)
      assert len(dense.vertices) > 30000 and len(face.vertices) < 3000
      for v, t in ((face.vertices, face.triangles), (dense.vertices, dense.triangles)):
        e = mesh_edges(v, t)
        assert e.max() < 5 * np.median(e), (name, len(v), e.max() / np.median(e))
      # The same surface: the dense mesh spans the face's own.
      np.testing.assert_allclose(np.ptp(dense.vertices, 0), np.ptp(face.vertices, 0),
                                 rtol=0.05)


def test_upsampled_maps_are_exact_on_linear_maps_and_keep_constant_ones():
  r, big = 16, 64
  v, u = np.meshgrid(np.arange(r, dtype=np.float64), np.arange(r, dtype=np.float64),
                     indexing='ij')
  m = np.stack([3 * u + 1, -2 * v + 0.5 * u, np.full_like(u, 4.0)], -1)
  up = outputs.upsample_map(m, big)
  c = (np.arange(big) + 0.5) * r / big - 0.5      # the big map's pixel centres in small pixels
  vv, uu = np.meshgrid(c, c, indexing='ij')
  inside = (uu >= 0) & (uu <= r - 1) & (vv >= 0) & (vv <= r - 1)
  np.testing.assert_allclose(up[inside], np.stack([3 * uu + 1, -2 * vv + 0.5 * uu,
                                                   np.full_like(uu, 4.0)], -1)[inside],
                             atol=1e-9)
  np.testing.assert_array_equal(outputs.upsample_map(m, r), m)   # same size: the map itself


def test_derived_face_masks_have_no_ragged_rows():
  """The face mask (trained, meshed) is one unbroken run in every row above the eyes: no
  comb of gaps at the forehead's top where the mesh's own edge is ragged."""
  from prnet_jax.faces import face_model as fm
  for name in ('ict', 'procedural'):
    for r in (64, 256):
      a = uv_assets_for(name, r)
      eyes_row = int(a.kpt_uv[36:48, 1].min())
      for row in range(eyes_row):
        idx = np.nonzero(a.face_mask[row])[0]
        assert len(idx) == 0 or len(idx) == idx[-1] - idx[0] + 1, (name, r, row)
  comb = np.zeros((8, 8), bool)
  comb[3:] = True
  comb[2, ::2] = True
  assert not fm.trim_ragged_top(comb)[2].any() and fm.trim_ragged_top(comb)[3:].all()


def test_inputs_that_share_a_name_get_their_own_outputs():
  """face.jpg and face.png in one folder must not overwrite each other's results."""
  stems = predict.output_stems(['in/face.jpg', 'in/face.png', 'in/other.jpg', 'in/FACE.JPG',
                                'in/clip.mp4', 'in/face_jpg.png'])
  assert stems[2] == 'other' and stems[4] == 'clip'  # unique names keep their stem
  assert len({s.lower() for s in stems}) == len(stems), stems
  assert stems[0].startswith('face') and stems[1].startswith('face') and stems[1] != stems[0]
  assert predict.output_stems(['a/face.jpg']) == ['face']


# ------------------------------------------------------------------ CLI: boxes, outputs, cache

def test_boxes_inline_json_and_text_and_their_errors(tmp_path):
  f = predict.parse_boxes('10,20,110,140;5,5,50,60')
  np.testing.assert_array_equal(f('any.jpg', None), [[10, 20, 110, 140], [5, 5, 50, 60]])
  (tmp_path / 'b.json').write_text(json.dumps({'sub/a.jpg': [[1, 2, 30, 40]], 'b.png': [4, 5, 60, 70]}))
  f = predict.parse_boxes(str(tmp_path / 'b.json'))
  np.testing.assert_array_equal(f('a.jpg', None), [[1, 2, 30, 40]])
  np.testing.assert_array_equal(f('b.png', None), [[4, 5, 60, 70]])
  assert f('c.png', None) is None  # not named: detected
  (tmp_path / 'b.txt').write_text('1 2 30 40\n3,4,50,60\n')
  np.testing.assert_array_equal(predict.parse_boxes(str(tmp_path / 'b.txt'))('x', None),
                                [[1, 2, 30, 40], [3, 4, 50, 60]])
  for spec, message in (('10,20,110', 'groups of four numbers'),
                        ('10,20,5,140', 'right > left'),
                        ('photo.jpg', 'neither a file nor boxes'),
                        ('1,2,3,nan', 'finite')):
    with pytest.raises(predict.BoxError, match=message):
      predict.parse_boxes(spec)
  (tmp_path / 'bad.json').write_text('{"a.jpg": [[1, 2, 3]]}')
  with pytest.raises(predict.BoxError, match=r'bad.json: a.jpg: boxes must be groups of four'):
    predict.parse_boxes(str(tmp_path / 'bad.json'))


def test_no_detect_uses_the_whole_crop_and_outputs_picks_the_files(ckpt, predictor, tmp_path,
                                                                   capsys):
  """--no_detect: an R x R image is the network's input as it is (identity crop), as the
  official demo's --isDlib False; --outputs writes only what it names; the position map is
  the face's; --texture_size sets the texture's side."""
  pred = predictor
  r = pred.model.resolution
  image = np.random.default_rng(0).integers(0, 256, (r, r, 3), np.uint8)
  Image.fromarray(image).save(tmp_path / 'crop.png')
  assert predict.main([f'--checkpoint={ckpt}', f'--input={tmp_path / "crop.png"}',
                       f'--output={tmp_path / "o"}', '--no_detect', '--outputs=posmap,textured',
                       '--texture_size=96']) == 0
  assert sorted(os.listdir(tmp_path / 'o')) == [
      'crop_face0_posmap.npy', 'crop_face0_textured.mtl', 'crop_face0_textured.obj',
      'crop_face0_textured.png']
  (face,) = pred.predict(image, inference.whole_image_box(image), box_convention='crop')
  np.testing.assert_allclose(face.crop_transform, np.eye(3), atol=1e-6)
  np.testing.assert_allclose(np.load(tmp_path / 'o' / 'crop_face0_posmap.npy'),
                             face.position_map, atol=1e-4)
  assert Image.open(tmp_path / 'o' / 'crop_face0_textured.png').size == (96, 96)
  capsys.readouterr()
  assert predict.main([f'--input={tmp_path}', f'--output={tmp_path / "o2"}',
                       '--outputs=landmarks,mesh']) == 2
  assert "unknown output(s) ['mesh']" in capsys.readouterr().out


def test_given_boxes_replace_the_detector(ckpt, tmp_path, monkeypatch):
  monkeypatch.setattr(inference.Predictor, 'detector',
                      property(lambda self: pytest.fail('the detector ran')))
  image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), np.uint8)
  Image.fromarray(image).save(tmp_path / 'two.png')
  assert predict.main([f'--checkpoint={ckpt}', f'--input={tmp_path / "two.png"}',
                       f'--output={tmp_path / "o"}', '--boxes=10,10,70,80;80,20,150,100',
                       '--outputs=landmarks']) == 0
  boxes = [json.load(open(tmp_path / 'o' / f'two_face{k}_landmarks.json'))['box']
           for k in range(2)]
  np.testing.assert_allclose(boxes, [[10, 10, 70, 80], [80, 20, 150, 100]])


def test_the_compilation_cache_goes_to_the_user_cache_folder(tmp_path):
  code = ('import jax\nfrom prnet_jax import runtime\n'
          'print(runtime.enable_compilation_cache())\n'
          'print(jax.config.jax_compilation_cache_dir)\n')
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_COMPILATION_CACHE_DIR', 'PRNET_JAX_CACHE_DIR')}
  env['XDG_CACHE_HOME'] = str(tmp_path / 'cache')
  r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                     timeout=300)
  expected = str(tmp_path / 'cache' / 'prnet_jax' / 'xla')
  assert r.stdout.split() == [expected, expected], r.stdout + r.stderr
  assert os.path.isdir(expected)
  # A folder the user chose is kept; one that cannot be made is a note, not a failure.
  env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path / 'mine')
  r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.stdout.split() == [str(tmp_path / 'mine')] * 2
  del env['JAX_COMPILATION_CACHE_DIR']
  (tmp_path / 'file').write_text('')
  env['PRNET_JAX_CACHE_DIR'] = str(tmp_path / 'file' / 'xla')
  r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.stdout.split() == ['None', 'None'] and 'note: no compilation cache' in r.stderr
