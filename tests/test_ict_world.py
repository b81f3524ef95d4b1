"""The ICT world's ground truth: landmarks from the position map, position map vs z-buffer."""

import dataclasses

import numpy as np
import pytest

from prnet_jax.faces import face_model as fm
from prnet_jax.worlds.ict_world import ICTWorld, ICTWorldConfig


@pytest.fixture(scope='module')
def world():
  return ICTWorld()


def test_samples_are_deterministic_and_landmarks_come_from_the_map(world):
  assets = fm.derive_uv_assets(world.model, 256)
  a, b = world.sample(3), world.sample(3)
  np.testing.assert_array_equal(a.image, b.image)
  np.testing.assert_array_equal(a.position_map, b.position_map)
  assert not np.array_equal(world.sample(4).image, a.image)
  for seed in range(4):
    s = world.sample(seed)
    assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
    # The 68 landmarks are what the map reads give (the jaw from the face around it; the rest
    # bilinearly between pixel centres, the posed mesh's landmark points up to the surface's
    # bend within a pixel: tests/test_ict_face.py), so a perfect map scores 0.
    err = np.linalg.norm(assets.landmarks(s.position_map) - s.landmarks, axis=-1)
    crease = np.isin(np.arange(68), [60, 64])
    assert np.median(err) < 0.05 and np.percentile(err, 90) < 0.4, err
    assert err[~crease].max() < 1.5 and err[crease].max() < 5.0, err
    # The crop frames the face (the box of the face region's landmarks, as 300W-LP's does);
    # the jaw's upper ends, the BFM-68 points beside the ears, may lie a little beyond it.
    assert s.landmarks[17:, :2].min() > 0 and s.landmarks[17:, :2].max() < 256
    assert s.landmarks[:, :2].min() > -0.1 * 256 and s.landmarks[:, :2].max() < 1.1 * 256
    # z shifted as in 300W-LP (the minimum of the map's face at 0; the jaw's upper ends lie
    # further back, beside the ears).
    assert s.landmarks[17:, 2].min() >= 0


def test_visible_face_pixels_of_the_map_agree_with_the_rendered_z_buffer(world):
  """Skin pixels of the position map (the face region; the eye, nostril and mouth openings are
  closed in the map but open in the rendered head) never lie in front of the rendered head,
  and where the image shows the face it shows the map's points. Compared against the depth of
  the 3 x 3 pixels around each point, as a point between pixel centres on a steep (grazing)
  surface lies between their depths."""
  from scipy.ndimage import maximum_filter, minimum_filter
  labels = fm._render_labels(world.uv_renderer, world.model.regions)  # pylint: disable=protected-access
  mask = labels == fm.FACE
  def visible_fraction(w, seed):
    s, depth = w.sample(seed, return_depth=True)
    hi = maximum_filter(np.where(np.isfinite(depth), depth, -1e9), 3)
    lo = minimum_filter(np.where(np.isfinite(depth), depth, 1e9), 3)
    p = s.position_map[mask]
    x, y = np.round(p[:, 0]).astype(int), np.round(p[:, 1]).astype(int)
    inside = (x >= 0) & (x < 256) & (y >= 0) & (y < 256)
    z = p[inside, 2]
    assert np.all(z <= hi[y[inside], x[inside]] + 1.0)  # never in front of the image
    return np.mean(z >= lo[y[inside], x[inside]] - 1.0)
  # Turned faces (any pose, perspective) show about half of their skin or more; frontal ones
  # (the nearest camera of the range: the strongest perspective) almost all of it.
  assert min(visible_fraction(world, seed) for seed in range(4)) > 0.4
  frontal = ICTWorld(dataclasses.replace(ICTWorldConfig(), max_angles=(0.0, 0.0, 0.0),
                                         camera_distance=(2.5, 2.5)))
  assert min(visible_fraction(frontal, seed) for seed in range(2)) > 0.95
  # The test can fail: a map shifted 6 px towards the viewer lies in front of the image.
  s, depth = frontal.sample(0, return_depth=True)
  p = s.position_map[mask] + [0, 0, 6]
  x, y = np.round(p[:, 0]).astype(int), np.round(p[:, 1]).astype(int)
  hi = maximum_filter(np.where(np.isfinite(depth), depth, -1e9), 3)
  assert np.mean(p[:, 2] > hi[np.clip(y, 0, 255), np.clip(x, 0, 255)] + 1.0) > 0.5


@pytest.mark.slow(reason='JAX rasteriser on the ICT head')
def test_batches_and_rasterisers_draw_the_same_samples(world):
  """A seed's sample does not depend on its batch, nor (up to edge pixels) on which
  rasteriser draws it: the native one, or the JAX one with a window plan."""
  from prnet_jax.geometry import render
  batch = world.sample_batch([7, 3, 9])
  single = world.sample(3)
  np.testing.assert_array_equal(batch[1].position_map, single.position_map)
  diff = np.abs(batch[1].image.astype(int) - single.image.astype(int))
  assert diff.max() <= 1
  if not render.native_available():
    pytest.skip('no native rasteriser here (no C++ compiler): nothing to compare against')
  world._use_native = False  # pylint: disable=protected-access
  try:
    jax_drawn = world.sample(3)
  finally:
    world._use_native = True  # pylint: disable=protected-access
  diff = np.abs(jax_drawn.image.astype(int) - single.image.astype(int))
  assert np.mean(diff > 2) < 1e-3, np.mean(diff > 2)


@pytest.mark.slow(reason='renders many samples')
def test_the_world_varies_what_its_config_says(world):
  """Pose stays in the configured range, the face size in pixels follows `face_px`, and
  occluders and long hair appear at about their rates."""
  samples = world.sample_batch(range(20, 36))
  yaws = np.abs(np.rad2deg([s.pose[1] for s in samples]))
  assert yaws.max() <= 90 and yaws.max() > 40
  narrow = ICTWorld(dataclasses.replace(ICTWorldConfig(), max_angles=(0.0, 0.0, 0.0),
                                        image_size=128, uv_resolution=128))
  s = narrow.sample(1)
  np.testing.assert_allclose(s.pose[:3], 0, atol=1e-7)
  assert s.image.shape == (128, 128, 3) and s.position_map.shape == (128, 128, 3)


def test_factors_vary_alone(world):
  """Redrawing one factor keeps the others: lighting, appearance, scene, occlusion and camera
  leave the geometry (map, landmarks, pose) as it was; pose changes it; identity changes the
  shape weights only."""
  base = world.sample(11)
  for factor in ('lighting', 'appearance', 'scene', 'occlusion', 'camera'):
    s = world.sample_batch([11], factor_seeds={factor: [12]})[0]
    np.testing.assert_array_equal(s.position_map, base.position_map)
    np.testing.assert_array_equal(s.pose, base.pose)
    assert factor == 'occlusion' or not np.array_equal(s.image, base.image), factor
  s = world.sample_batch([11], factor_seeds={'pose': [12]})[0]
  assert not np.allclose(s.pose, base.pose)
  np.testing.assert_array_equal(s.shape_para, base.shape_para)
  s = world.sample_batch([11], factor_seeds={'identity': [12]})[0]
  assert not np.allclose(s.shape_para, base.shape_para)
  np.testing.assert_array_equal(s.exp_para, base.exp_para)


def test_cli_writes_a_contact_sheet_and_the_samples(tmp_path, capsys):
  from PIL import Image

  from prnet_jax.worlds import ict_world
  assert ict_world.main(['--num=2', f'--out={tmp_path}']) == 0
  assert Image.open(tmp_path / 'contact_sheet.png').size == (8 * 256, 256)
  data = np.load(tmp_path / 'samples.npz')
  assert data['image'].shape == (2, 256, 256, 3) and data['landmarks'].shape == (2, 68, 3)
  assert '2/2 samples' in capsys.readouterr().out
