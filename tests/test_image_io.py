"""Images entering the package: wide (16-bit, float) grayscale files keep their tones."""

import numpy as np
from PIL import Image
import pytest

from prnet_jax.data import image_io


@pytest.mark.parametrize('kind', ['png16', 'tiff_float', 'tiff_float255'])
def test_wide_grayscale_images_keep_their_tones(tmp_path, kind):
  """16-bit PNGs and float TIFFs are scaled to 8 bits, not clipped to white or black."""
  ramp = np.tile(np.linspace(0, 1, 64), (32, 1))  # dark to bright
  path = str(tmp_path / ('a.png' if kind == 'png16' else 'a.tif'))
  if kind == 'png16':
    Image.fromarray(np.round(ramp * 65535).astype(np.uint16)).save(path)
  else:
    Image.fromarray((ramp * (255 if kind == 'tiff_float255' else 1)).astype(np.float32)).save(path)
  got = image_io.load_photo(path)
  assert got.shape == (32, 64, 3) and got.dtype == np.uint8
  np.testing.assert_allclose(got[..., 0], np.round(ramp * 255), atol=1)
  assert np.array_equal(got[..., 0], got[..., 2])
