"""The ICT world's ground truth: landmarks from the position map, position map vs z-buffer."""

import numpy as np
import pytest

from prnet_jax import face_model as fm
from prnet_jax.ict_world import ICTWorld


@pytest.fixture(scope='module')
def world():
  return ICTWorld(image_size=256)


def test_samples_are_deterministic_and_landmarks_come_from_the_map(world):
  assets = fm.derive_uv_assets(world.model, 256)
  a, b = world.sample(3), world.sample(3)
  np.testing.assert_array_equal(a.image, b.image)
  np.testing.assert_array_equal(a.position_map, b.position_map)
  assert not np.array_equal(world.sample(4).image, a.image)
  for seed in range(4):
    s = world.sample(seed)
    assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
    # The 68 landmarks read from the map are the posed mesh's projected landmarks.
    np.testing.assert_allclose(assets.landmarks(s.position_map), s.landmarks, atol=2e-3)
    assert s.landmarks[:, :2].min() > 0 and s.landmarks[:, :2].max() < 256
    assert s.landmarks[:, 2].min() >= 0  # z shifted as in 300W-LP (minimum of the face at 0)


def test_visible_face_pixels_of_the_map_agree_with_the_rendered_z_buffer(world):
  """Skin pixels of the position map (the face region; the eye, nostril and mouth openings are
  closed in the map but open in the rendered head) never lie in front of the rendered head,
  and where the image shows the face it shows the map's points. Compared against the depth of
  the 3 x 3 pixels around each point, as a point between pixel centres on a steep (grazing)
  surface lies between their depths."""
  from scipy.ndimage import maximum_filter, minimum_filter
  labels = fm._render_labels(world.uv_renderer, world.model.regions)  # pylint: disable=protected-access
  mask = labels == fm.FACE
  visible = {}
  for seed in range(5):
    s, depth = world.sample(seed, return_depth=True)
    hi = maximum_filter(np.where(np.isfinite(depth), depth, -1e9), 3)
    lo = minimum_filter(np.where(np.isfinite(depth), depth, 1e9), 3)
    p = s.position_map[mask]
    x, y = np.round(p[:, 0]).astype(int), np.round(p[:, 1]).astype(int)
    inside = (x >= 0) & (x < 256) & (y >= 0) & (y < 256)
    z = p[inside, 2]
    assert np.all(z <= hi[y[inside], x[inside]] + 1.0)  # never in front of the image
    visible[abs(float(np.rad2deg(s.pose[1])))] = np.mean(z >= lo[y[inside], x[inside]] - 1.0)
  # Near-frontal faces show (almost) all of their skin; turned ones about half or more.
  yaws = sorted(visible)
  assert visible[yaws[0]] > 0.95 and min(visible.values()) > 0.4
  # The test can fail: a map shifted 6 px towards the viewer lies in front of the image.
  s, depth = world.sample(0, return_depth=True)
  p = s.position_map[mask] + [0, 0, 6]
  x, y = np.round(p[:, 0]).astype(int), np.round(p[:, 1]).astype(int)
  hi = maximum_filter(np.where(np.isfinite(depth), depth, -1e9), 3)
  assert np.mean(p[:, 2] > hi[np.clip(y, 0, 255), np.clip(x, 0, 255)] + 1.0) > 0.5


def test_cli_writes_a_contact_sheet_and_the_samples(tmp_path, capsys):
  from PIL import Image
  from prnet_jax import ict_world
  assert ict_world.main(['--num=2', f'--out={tmp_path}']) == 0
  assert Image.open(tmp_path / 'contact_sheet.png').size == (8 * 256, 256)
  data = np.load(tmp_path / 'samples.npz')
  assert data['image'].shape == (2, 256, 256, 3) and data['landmarks'].shape == (2, 68, 3)
  assert '2/2 samples' in capsys.readouterr().out
