"""Texture swap and frontalisation: UV conventions by round trips on known geometry, the masks,
the blend, the pose removed, and the command line on real photos."""

import os

import numpy as np
import pytest

from prnet_jax.faces.catalog import uv_assets_for
from prnet_jax.geometry import transforms
from prnet_jax.serving import applications as ap
from prnet_jax.serving import inference

H = W = 160


@pytest.fixture(scope='module')
def assets():
  return uv_assets_for('ict', 64)


def make_face(assets, yaw_deg=0.0, pitch_deg=0.0, scale=1.6, shift=(0.0, 0.0)):
  """A `inference.Face` of the canonical face posed by a known rotation, in a W x H image."""
  c = assets.canonical_vertices.astype(np.float64)
  centre = c.mean(0)
  r = transforms.angles_to_matrix(np.deg2rad([pitch_deg, yaw_deg, 0.0]))
  flip = np.array([1, -1, 1])  # position-map frames are y down; the rotation acts y up
  v = ((c - centre) * flip) @ r.T * flip * scale + [W / 2 + shift[0], H / 2 + shift[1], 60]
  res = assets.resolution
  pos = np.zeros((res * res, 3), np.float32)
  pos[assets.face_indices] = v
  pos = pos.reshape(res, res, 3)
  angles, camera = inference.estimate_pose(assets.canonical_vertices, v)
  n = len(v)
  return inference.Face(box=np.zeros(4, np.float32), crop_transform=np.eye(3, dtype=np.float32),
                      position_map=pos, landmarks=assets.landmarks(pos),
                      vertices=v.astype(np.float32), triangles=assets.triangles,
                      face_indices=assets.face_indices, colors=np.zeros((n, 3), np.float32),
                      visibility=np.ones(n, bool), pose_angles_deg=angles.astype(np.float32),
                      camera_matrix=camera.astype(np.float32),
                      uv_texture=np.zeros((res, res, 3), np.uint8))


def checker_texture(size=128):
  """A smooth, left-right asymmetric UV texture (0-255)."""
  y, x = np.mgrid[0:size, 0:size] / size
  return np.stack([255 * x, 255 * y, 128 + 100 * np.sin(6 * x) * np.cos(4 * y)], -1).astype(
      np.float32)


def render_photo(face, assets, texture, background=20.0):
  (img,), covered = ap.render_texture(face.vertices, assets, [texture], H, W)
  return np.where(covered[..., None], np.clip(np.round(img), 0, 255), background).astype(
      np.uint8), covered


def test_texture_read_back_from_a_rendered_photo_is_the_texture(assets):
  """render_texture (UV -> image) and face_texture (image -> UV) are inverse on well-seen texels:
  the two share the UV-pixel and texel conventions."""
  face = make_face(assets, yaw_deg=20)
  tex = checker_texture()
  photo, _ = render_photo(face, assets, tex)
  back, seen = ap.face_texture(face, photo, assets, size=128)
  good = seen > 0.9
  good &= np.roll(good, 2, 0) & np.roll(good, -2, 0) & np.roll(good, 2, 1) & np.roll(good, -2, 1)
  assert good.mean() > 0.25
  err = np.abs(back - tex)[good]
  assert np.median(err) < 3 and np.percentile(err, 95) < 12, (np.median(err),
                                                                np.percentile(err, 95))


def test_how_well_seen_hides_the_far_side_of_a_turned_face(assets):
  face = make_face(assets, yaw_deg=60)
  seen = ap.how_well_seen(face, assets, H, W)
  x = assets.canonical_vertices[:, 0]
  mid = np.median(x)
  near, far = seen[x < mid - 8].mean(), seen[x > mid + 8].mean()
  # Turned by +60 degrees: one half faces the camera, the other turns away.
  assert max(near, far) > 0.5 and min(near, far) < 0.5 * max(near, far), (near, far)
  front = ap.how_well_seen(make_face(assets), assets, H, W)
  assert front[np.abs(x - mid) < 8].mean() > 0.6


def test_masks(assets):
  face = ap.part_mask('face', assets, 128)
  eyes = ap.part_mask('eyes', assets, 128)
  assert set(np.unique(face)) <= {0.0, 1.0} and face.mean() > 0.3
  k = np.round((assets.kpt_uv + 0.5) * 128 / 64 - 0.5).astype(int)
  assert (eyes[k[36:48, 1], k[36:48, 0]] > 0.9).all()       # every eye landmark inside
  assert (eyes[k[48:68, 1], k[48:68, 0]] < 0.01).all()      # the mouth outside
  assert (eyes[k[27:36, 1], k[27:36, 0]] < 0.5).sum() >= 7  # most of the nose outside
  assert (eyes * (1 - face)).sum() < 0.02 * eyes.sum()
  custom = ap.part_mask(np.full((64, 64), 255.0), assets, 128)
  np.testing.assert_allclose(custom, face)
  with pytest.raises(ap.ApplicationError, match='mask must be'):
    ap.part_mask(np.ones((10, 20)), assets, 128)
  with pytest.raises(ap.ApplicationError, match='part must be'):
    ap.part_mask('nose', assets, 128)


def test_fill_hidden_takes_the_mirror_then_the_fallback(assets):
  assert ap.mirror_symmetric(assets)
  s = 32
  tex = np.random.default_rng(0).uniform(0, 255, (s, s, 3)).astype(np.float32)
  vis = np.ones((s, s), np.float32)
  vis[:, :8] = 0          # hidden, mirror (columns 24-31) seen
  vis[:4, 24:] = 0        # and where both sides are hidden
  vis[:4, :8] = 0
  fallback = np.full_like(tex, 7.0)
  out = ap.fill_hidden(tex, vis, assets, fallback)
  np.testing.assert_array_equal(out[4:, :8], tex[4:, ::-1][:, :8])
  np.testing.assert_array_equal(out[:4, :8], fallback[:4, :8])
  np.testing.assert_array_equal(out[:, 8:24], tex[:, 8:24])
  # A layout that is not symmetric gets no mirror: the fallback everywhere hidden.
  import dataclasses
  canonical = assets.canonical_vertices.copy()
  centre = np.median(canonical[:, 0])
  canonical[:, 0] = np.where(canonical[:, 0] < centre, centre + 1.3 * (canonical[:, 0] - centre),
                             canonical[:, 0])   # one cheek 30% wider
  lopsided = dataclasses.replace(assets, canonical_vertices=canonical)
  assert not ap.mirror_symmetric(lopsided)
  out = ap.fill_hidden(tex, vis, lopsided, fallback)
  np.testing.assert_array_equal(out[:, :8], fallback[:, :8])


def test_swap_of_a_face_with_itself_changes_nothing_and_another_texture_shows(assets):
  face = make_face(assets, yaw_deg=15)
  photo, covered = render_photo(face, assets, checker_texture())
  same = ap.swap_faces(face, photo, face, photo, assets, 'face', 128, blend='none')
  inner = covered & np.roll(covered, 3, 0) & np.roll(covered, -3, 0) & np.roll(
      covered, 3, 1) & np.roll(covered, -3, 1)
  d = np.abs(same.astype(int) - photo.astype(int))
  assert np.median(d[inner]) <= 3
  np.testing.assert_array_equal(same[~covered], photo[~covered])  # off the face: untouched
  # A uniformly red source of another pose: the target's face turns red, the rest stays.
  src = make_face(assets, yaw_deg=-10, scale=1.3, shift=(10, 5))
  red, _ = render_photo(src, assets, np.tile(np.array([230.0, 20, 20], np.float32),
                                             (128, 128, 1)))
  out = ap.swap_faces(src, red, face, photo, assets, 'face', 128, blend='none')
  assert out[inner][:, 0].mean() > out[inner][:, 2].mean() + 60
  np.testing.assert_array_equal(out[~covered], photo[~covered])
  # Poisson cloning keeps the pasted texture's gradients (not its flat colour: it takes the
  # target's colours at the border): inside, its gradients are the plainly pasted ones.
  u = np.arange(128) / 128
  stripes = np.tile((128 + 100 * np.sign(np.sin(2 * np.pi * 6 * u)))[None, :, None],
                    (128, 1, 3)).astype(np.float32)
  other, _ = render_photo(src, assets, stripes)
  pasted = ap.swap_faces(src, other, face, photo, assets, 'face', 128, blend='none')
  cloned = ap.swap_faces(src, other, face, photo, assets, 'face', 128, blend='poisson')
  np.testing.assert_array_equal(cloned[~covered], photo[~covered])
  import cv2
  inside = cv2.erode((np.abs(pasted.astype(int) - photo.astype(int)).sum(-1) > 0).astype(
      np.uint8), np.ones((7, 7), np.uint8)) > 0
  grad = lambda im: np.diff(im.astype(float), axis=1)[inside[:, 1:]]
  assert inside.sum() > 1000
  assert (np.mean(np.abs(grad(cloned) - grad(pasted)))
          < 0.3 * np.mean(np.abs(grad(photo) - grad(pasted))))
  eyes = ap.swap_faces(src, red, face, photo, assets, 'eyes', 128, blend='none')
  changed = np.abs(eyes.astype(int) - photo.astype(int)).sum(-1) > 30
  assert 0 < changed.sum() < 0.3 * covered.sum()
  lm = face.landmarks
  for eye in (slice(36, 42), slice(42, 48)):   # each eye's own landmark box mostly replaced
    box = changed[int(lm[eye, 1].min()):int(lm[eye, 1].max()) + 1,
                  int(lm[eye, 0].min()):int(lm[eye, 0].max()) + 1]
    assert box.mean() > 0.6, box.mean()
  assert not changed[int(lm[48:68, 1].min()):int(lm[48:68, 1].max()) + 1,
                     int(lm[48:68, 0].min()):int(lm[48:68, 0].max()) + 1].any()  # mouth kept


def test_frontalize_removes_the_pose_and_keeps_the_shape(assets):
  tex = checker_texture()
  fronts = []
  for yaw, pitch, scale in ((0, 0, 1.6), (35, 0, 1.6), (-25, 15, 1.2)):
    face = make_face(assets, yaw, pitch, scale)
    photo, _ = render_photo(face, assets, tex)
    fronts.append(ap.frontalize(face, photo, assets, size=128, texture_size=128))
  for f in fronts[1:]:
    # The same frontal mesh, whatever the pose (up to the similarity fit's float error).
    np.testing.assert_allclose(f.vertices[:, :2], fronts[0].vertices[:, :2], atol=0.05)
    # And the same picture where all three saw the face squarely.
    both = f.mask & fronts[0].mask
    d = np.abs(f.image.astype(int) - fronts[0].image.astype(int))[both]
    assert np.median(d) < 6
  c = assets.canonical_vertices
  # The canonical frame: the canonical face itself, up to scale and translation.
  f0 = fronts[0].canonical
  err = (f0 - f0.mean(0)) / np.ptp(f0[:, 0]) - (c - c.mean(0)) * [1, -1, 1] / np.ptp(c[:, 0])
  assert np.abs(err).max() < 1e-3
  assert fronts[0].image.shape == (128, 128, 3) and fronts[0].mask.mean() > 0.3


@pytest.mark.slow(reason='CLI subprocesses on real photos')
def test_cli_swaps_and_frontalizes_real_photos_and_reports_bad_input(tmp_path, capsys):
  import types

  def _run_cli(args):
    code = ap.main(args)
    return types.SimpleNamespace(returncode=code, stdout=capsys.readouterr().out, stderr='')

  from PIL import Image

  from conftest import shared_path
  folder = shared_path('aflw2000-samples')
  a, b = os.path.join(folder, 'image00050.jpg'), os.path.join(folder, 'image02616.jpg')
  blank = tmp_path / 'blank.png'
  Image.fromarray(np.full((120, 120, 3), 200, np.uint8)).save(blank)
  out = tmp_path / 'out'
  r = _run_cli(['swap', f'--source={a}', f'--target={b}', f'--output={out}', '--part=eyes'])
  assert r.returncode == 0, r.stdout + r.stderr
  swapped = np.asarray(Image.open(out / 'image00050_on_image02616.png'))
  target = np.asarray(Image.open(b).convert('RGB'))
  assert swapped.shape == target.shape
  changed = np.abs(swapped.astype(int) - target.astype(int)).sum(-1) > 30
  assert 0.001 < changed.mean() < 0.1  # the eye region only
  r = _run_cli(['frontalize', f'--input={b}', f'--output={out}', '--size=128'])
  assert r.returncode == 0, r.stdout + r.stderr
  assert np.asarray(Image.open(out / 'image02616_frontal.png')).shape == (128, 128, 3)
  assert os.path.getsize(out / 'image02616_frontal.obj') > 0
  r = _run_cli(['swap', f'--source={blank}', f'--target={b}', f'--output={out}'])
  assert r.returncode == 2 and r.stdout.strip() == f'error: {blank}: no face found'
  r = _run_cli(['swap', f'--source={a}', f'--target={b}', f'--output={out}',
                f'--part={tmp_path / "nose.png"}'])
  assert r.returncode == 2 and r.stdout.strip() == (
      f"error: {tmp_path / 'nose.png'}: --part must be 'face', 'eyes' or a mask image file")
  with pytest.raises(ap.ApplicationError, match="blend must be 'poisson' or 'none'"):
    ap.swap_texture(None, a, b, blend='alpha')
  r = _run_cli(['frontalize', f'--input={a}', f'--output={out}', '--face=3'])
  assert r.returncode == 2
  assert r.stdout.strip() == f'error: {a}: 1 face(s) found, face index 3 is out of range (0..0)'
