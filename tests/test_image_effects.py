"""Image-space parts of the ICT world: determinism, ranges, and that each does only its job."""

import dataclasses

import numpy as np
import pytest

from prnet_jax.worlds import image_effects as fx
from prnet_jax.worlds.ict_world import ICTWorldConfig


@pytest.mark.parametrize('kind', sorted(fx.BACKGROUNDS))
def test_backgrounds_are_seeded_images_in_range(kind):
  a = fx.background(np.random.default_rng(3), 64, (kind,))
  b = fx.background(np.random.default_rng(3), 64, (kind,))
  c = fx.background(np.random.default_rng(4), 64, (kind,))
  assert a.shape == (64, 64, 3) and a.dtype == np.float32
  assert a.min() >= 0 and a.max() <= 1
  assert kind == 'plain' or a.std() > 0.01  # a plain backdrop may be one flat colour
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_plain_backdrops_are_smooth_and_span_black_to_white():
  draws = [fx.background(np.random.default_rng(s), 64, ('plain',)) for s in range(60)]
  for img in draws:  # no structure: neighbouring pixels differ by a few grey levels at most
    for axis in (0, 1):
      assert np.abs(np.diff(img, axis=axis)).max() < 4 / 255
  means = np.array([img.mean() for img in draws])
  assert (means < 0.08).sum() >= 10  # black backdrops, the photos that fooled a model without them
  assert (means > 0.75).sum() >= 4 and ((means > 0.15) & (means < 0.75)).sum() >= 10
  chroma = np.array([np.ptp(img.mean((0, 1))) for img in draws])
  assert (chroma > 0.05).sum() >= 5  # some muted colours, most neutral
  assert (chroma < 0.01).sum() >= 30


def test_camera_without_effects_only_quantises_and_with_them_changes_the_image():
  img = np.random.default_rng(0).uniform(0, 1, (64, 64, 3)).astype(np.float32)
  off = dataclasses.replace(ICTWorldConfig(), colour_cast=0.0, gamma=1.0, p_defocus=0.0,
                            p_motion_blur=0.0, p_low_resolution=0.0, max_noise=0.0, p_jpeg=0.0)
  out = fx.camera(np.random.default_rng(1), img, off)
  assert out.dtype == np.uint8 and out.shape == img.shape
  np.testing.assert_array_equal(out, np.uint8(np.round(img * 255)))
  for field in ('p_defocus', 'p_motion_blur', 'p_low_resolution', 'p_jpeg'):
    on = dataclasses.replace(off, **{field: 1.0})
    assert np.abs(fx.camera(np.random.default_rng(1), img, on).astype(int)
                  - out).mean() > 2, field


def test_occluders_draw_near_the_face_and_only_when_drawn():
  img = np.zeros((128, 128, 3), np.float32)
  rng = np.random.default_rng(0)
  # A frontal 68-point layout scaled into the middle of the image.
  from prnet_jax.faces.ict_face import face_model
  lm = face_model().mean[face_model().landmarks][:, :2] * [1, -1]
  lm = (lm - lm.min(0)) / np.ptp(lm, 0) * 60 + 34
  same, drawn = fx.occlude(rng, img, lm, np.array([0.8, 0.6, 0.5]), {})
  assert drawn == [] and same is img
  out, drawn = fx.occlude(rng, img, lm, np.array([0.8, 0.6, 0.5]), {'glasses': 1.0})
  assert drawn == ['glasses']
  changed = np.any(out > 0, -1)
  ys, xs = np.nonzero(changed)
  # Frames around the eyes, temples towards the jaw ends: within the face's box.
  assert changed.sum() > 50 and xs.min() >= lm[:, 0].min() - 2 and xs.max() <= lm[:, 0].max() + 2
  assert ys.max() <= lm[:, 1].max()


def test_silhouette_smoothing_touches_only_the_edge():
  img = np.zeros((32, 32, 3), np.float32)
  mask = np.zeros((32, 32), bool)
  mask[8:24, 8:24] = True
  img[mask] = 1.0
  out = fx.smooth_silhouette(img, mask)
  changed = np.any(out != img, -1)
  assert changed.any()
  ring = np.zeros_like(mask)
  ring[7:25, 7:25] = True
  ring[9:23, 9:23] = False
  assert not np.any(changed & ~ring)


def test_long_hair_paints_behind_and_below_the_scalp():
  img = np.zeros((64, 64, 3), np.float32)
  t = np.linspace(0, np.pi, 20)
  scalp = np.stack([32 + 14 * np.cos(t), 28 - 12 * np.sin(t)], 1)  # an arc, top of a head
  out = fx.long_hair(np.random.default_rng(0), img, scalp, np.array([0.3, 0.2, 0.1]),
                     np.array([0.0, 1.0]))
  painted = np.any(out > 0.01, -1)
  assert painted[18:26, 28:36].all()        # over the scalp (inside the arc)
  assert painted[40:, :].any()              # falling below it
  assert not painted[:8, :8].any()          # not everywhere

def test_glasses_on_far_profiles_with_narrow_eyes_draw_without_error():
  # A far profile: an eye's corners (36 and 39, 42 and 45) a pixel or two apart. Pillow cannot
  # draw rounded lenses only a few pixels across, so such lenses are ellipses.
  from prnet_jax.faces.ict_face import face_model
  base = face_model().mean[face_model().landmarks][:, :2] * [1, -1]
  base = (base - base.min(0)) / np.ptp(base, 0) * 60 + 34
  img = np.zeros((128, 128, 3), np.float32)
  for eye_w in np.linspace(0.3, 3.0, 10):
    lm = base.copy()
    lm[39] = lm[36] + [eye_w, 0.0]
    lm[45] = lm[42] + [eye_w, 0.0]
    for seed in range(20):
      out, drawn = fx.occlude(np.random.default_rng(seed), img, lm, np.array([0.8, 0.6, 0.5]),
                              {'glasses': 1.0})
      assert drawn == ['glasses'] and np.any(out > 0), (eye_w, seed)
