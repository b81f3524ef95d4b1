"""On-device augmentation: image and position map stay consistent."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prnet_jax.data import augment
from prnet_jax.data.augment import AugmentConfig
from prnet_jax.faces.face_model import derive_uv_assets
from prnet_jax.faces.procedural_face import procedural_face_model
from prnet_jax.worlds.procedural_world import SyntheticWorld

GEOMETRIC = AugmentConfig(color=(1.0, 1.0), occlusion_prob=0.0)
PICK = [0, 8, 16, 30, 36, 45, 48, 54]


@pytest.fixture(scope='module')
def sample_and_assets():
  world = SyntheticWorld()
  return world.sample(4), derive_uv_assets(procedural_face_model())


def blob_image(points, size=256, sigma=1.2):
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
  img = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in points)
  return np.repeat(img[..., None], 3, -1).astype(np.float32)


def test_landmarks_from_augmented_map_land_on_the_augmented_image(sample_and_assets):
  sample, assets = sample_and_assets
  lm = assets.landmarks(sample.position_map)[PICK, :2]
  images = jnp.asarray(np.stack([blob_image(lm)] * 4))
  maps = jnp.asarray(np.stack([sample.position_map] * 4))
  aug_images, aug_maps = jax.jit(augment.augment_batch, static_argnums=3)(
      jax.random.key(0), images, maps, GEOMETRIC)
  moved = 0
  for b in range(4):
    img, lm_aug = np.asarray(aug_images[b, ..., 0]), assets.landmarks(np.asarray(aug_maps[b]))
    for k, (x, y) in zip(PICK, lm_aug[PICK, :2]):
      if not (6 <= x < 250 and 6 <= y < 250):
        continue  # pushed out of the image by the augmentation
      xi, yi = int(round(x)), int(round(y))
      win = img[yi - 5:yi + 6, xi - 5:xi + 6]
      gy, gx = np.mgrid[yi - 5:yi + 6, xi - 5:xi + 6]
      cx, cy = (win * gx).sum() / win.sum(), (win * gy).sum() / win.sum()
      assert np.hypot(cx - x, cy - y) < 0.35, (b, k, cx - x, cy - y)
      moved = max(moved, np.hypot(x - lm[PICK.index(k), 0], y - lm[PICK.index(k), 1]))
  assert moved > 5  # the augmentation really moved things


def test_z_scales_with_the_similarity_and_background_stays_zero(sample_and_assets):
  sample, _ = sample_and_assets
  config = dataclasses.replace(GEOMETRIC, rotation_deg=0.0, translation=0.0, scale=(1.1, 1.1))
  pos = jnp.asarray(sample.position_map[None])
  _, out = augment.augment_batch(jax.random.key(1), jnp.zeros((1, 256, 256, 3)), pos, config)
  out, pos = np.asarray(out[0]), np.asarray(pos[0])
  inside = np.any(pos != 0, -1)
  np.testing.assert_allclose(out[inside][:, 2], 1.1 * pos[inside][:, 2], rtol=1e-5, atol=1e-4)
  c = 127.5
  np.testing.assert_allclose(out[inside][:, :2], 1.1 * (pos[inside][:, :2] - c) + c, atol=1e-3)
  assert np.all(out[~inside] == 0)


@pytest.mark.slow(reason='compiles the augmentation')
def test_deterministic_per_key_and_colour_range():
  rng = np.random.RandomState(0)
  images = jnp.asarray(rng.uniform(0.2, 0.6, (3, 32, 32, 3)).astype(np.float32))
  maps = jnp.asarray(rng.uniform(1, 30, (3, 32, 32, 3)).astype(np.float32))
  a = augment.augment_batch(jax.random.key(5), images, maps, AugmentConfig())
  b = augment.augment_batch(jax.random.key(5), images, maps, AugmentConfig())
  c = augment.augment_batch(jax.random.key(6), images, maps, AugmentConfig())
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
  colour_only = AugmentConfig(rotation_deg=0.0, translation=0.0, scale=(1.0, 1.0),
                              occlusion_prob=0.0)
  out, _ = augment.augment_batch(jax.random.key(2), images, maps, colour_only)
  ratio = np.asarray(out) / np.asarray(images)
  per_channel = ratio.reshape(3, -1, 3)
  assert np.allclose(per_channel, per_channel[:, :1], atol=1e-5)  # one factor per channel
  assert per_channel.min() >= 0.6 - 1e-6 and per_channel.max() <= 1.4 + 1e-6


@pytest.mark.slow(reason='compiles the augmentation')
def test_occlusion_changes_only_the_image():
  rng = np.random.RandomState(1)
  images = jnp.asarray(rng.uniform(0.4, 0.5, (8, 64, 64, 3)).astype(np.float32))
  maps = jnp.asarray(rng.uniform(1, 30, (8, 64, 64, 3)).astype(np.float32))
  only = AugmentConfig(rotation_deg=0.0, translation=0.0, scale=(1.0, 1.0), color=(1.0, 1.0),
                       occlusion_prob=1.0)
  out, out_maps = augment.augment_batch(jax.random.key(3), images, maps, only)
  changed = np.any(np.abs(np.asarray(out) - np.asarray(images)) > 1e-6, -1).mean(axis=(1, 2))
  assert np.all(changed > 0.005) and np.all(changed < 0.2)
  np.testing.assert_allclose(np.asarray(out_maps), np.asarray(maps), atol=1e-4)
  none, _ = augment.augment_batch(jax.random.key(3), images, maps,
                                  dataclasses.replace(only, occlusion_prob=0.0))
  np.testing.assert_allclose(np.asarray(none), np.asarray(images), atol=1e-5)


def test_config_from_mapping():
  c = AugmentConfig.from_mapping(dict(rotation_deg=30.0, scale=[0.8, 1.1], occlusion=False))
  assert c.rotation_deg == 30.0 and c.scale == (0.8, 1.1) and c.occlusion_prob == 0.0


def test_identity_config_is_skipped_and_skipping_changes_nothing():
  """augment_batch returns its inputs for NO_AUGMENT; the full warp path gives the same."""
  r = np.random.RandomState(0)
  images = jnp.asarray(r.rand(2, 16, 16, 3), jnp.float32)
  pos = jnp.asarray(r.rand(2, 16, 16, 3) * 16, jnp.float32)
  assert augment.NO_AUGMENT.is_identity and not augment.AugmentConfig().is_identity
  out_i, out_p = augment.augment_batch(jax.random.key(0), images, pos, augment.NO_AUGMENT)
  assert out_i is images and out_p is pos
  keys = jax.random.split(jax.random.key(0), 2)
  warped_i, warped_p = jax.vmap(lambda k, i, p: augment.augment_example(
      k, i, p, augment.NO_AUGMENT))(keys, images, pos)
  np.testing.assert_allclose(warped_i, images, atol=1e-6)
  np.testing.assert_allclose(warped_p, pos, atol=1e-5)


@pytest.mark.slow(reason='compiles the augmentation')
def test_degradations_grey_blur_noise_each_do_their_job_and_only_when_on():
  r = np.random.RandomState(3)
  images = jnp.asarray(r.uniform(0.2, 0.8, (4, 32, 32, 3)), jnp.float32)
  pos = jnp.asarray(r.uniform(1, 30, (4, 32, 32, 3)), jnp.float32)
  base = dict(rotation_deg=0.0, translation=0.0, scale=(1.0, 1.0), color=(1.0, 1.0),
              occlusion_prob=0.0)
  grey, gpos = augment.augment_batch(jax.random.key(1), images, pos,
                                     AugmentConfig(**base, grayscale_prob=1.0))
  grey = np.asarray(grey)
  np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-6)
  np.testing.assert_allclose(grey[..., 1], np.asarray(images) @ [0.299, 0.587, 0.114],
                             atol=1e-5)
  np.testing.assert_array_equal(np.asarray(gpos), np.asarray(pos))  # images only
  blur, _ = augment.augment_batch(jax.random.key(1), images, pos,
                                  AugmentConfig(**base, blur_prob=1.0, blur_sigma=(1.0, 1.0)))
  blur = np.asarray(blur)
  # A normalised kernel keeps the mean (edges clamped: away from them) and lowers the variance.
  inner = (slice(None), slice(4, -4), slice(4, -4))
  assert abs(blur[inner].mean() - np.asarray(images)[inner].mean()) < 0.01
  assert blur.std() < 0.6 * np.asarray(images).std()
  # Against a float64 brute-force 7-tap Gaussian at one interior pixel.
  taps = np.exp(-0.5 * np.arange(-3, 4) ** 2)
  taps /= taps.sum()
  patch = np.asarray(images, np.float64)[0, 13:20, 13:20, 0]
  assert abs(taps @ patch @ taps - blur[0, 16, 16, 0]) < 1e-5
  noisy, _ = augment.augment_batch(jax.random.key(1), images, pos,
                                   AugmentConfig(**base, noise_std=0.1))
  d = np.asarray(noisy) - np.asarray(images)
  assert 0.0 < d.std() < 0.1 and abs(d.mean()) < 0.01
  assert not AugmentConfig(**base, noise_std=0.1).is_identity
  # Probability 0 of each: nothing happens (the identity path).
  off = AugmentConfig(**base, grayscale_prob=0.0, blur_prob=0.0, noise_std=0.0)
  assert off.is_identity
