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


_INVERSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}


def _upright_photo() -> Image.Image:
  """A real photo (../shared) when present, else an asymmetric test card."""
  from conftest import SHARED_REFERENCE
  import os
  path = os.path.join(SHARED_REFERENCE, 'photos', '0.jpg')
  if os.path.exists(path):
    return Image.open(path).convert('RGB')
  card = np.zeros((90, 140, 3), np.uint8)
  card[:30, :50] = (255, 0, 0)
  card[60:, 100:] = (0, 0, 255)
  return Image.fromarray(card)


def _save_with_orientation(upright: Image.Image, orientation: int, path) -> None:
  """What a camera writes: the sensor's pixels plus the tag that turns them upright."""
  stored = upright if _INVERSE[orientation] is None else upright.transpose(_INVERSE[orientation])
  exif = Image.Exif()
  exif[0x0112] = orientation
  stored.save(path, 'JPEG', quality=95, exif=exif.tobytes())


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_turns_the_photo_upright(tmp_path, orientation):
  from PIL import ImageOps
  upright = _upright_photo()
  path = str(tmp_path / f'o{orientation}.jpg')
  _save_with_orientation(upright, orientation, path)
  got = image_io.load_photo(path)
  # Exactly what PIL's own EXIF transpose shows, and the upright photo up to JPEG loss.
  np.testing.assert_array_equal(got, np.asarray(ImageOps.exif_transpose(Image.open(path))))
  assert got.shape == np.asarray(upright).shape
  assert np.abs(got.astype(int) - np.asarray(upright, int)).mean() < 3
  # Bytes (uploads) the same, and shrinking keeps the orientation.
  np.testing.assert_array_equal(image_io.load_photo(open(path, 'rb').read()), got)
  small = image_io.load_photo(path, max_side=64)
  assert max(small.shape[:2]) == 64
  assert (small.shape[0] > small.shape[1]) == (got.shape[0] > got.shape[1])


def test_a_sideways_portrait_gets_the_upright_photos_landmarks(tmp_path, pretrained_predictor):
  """A phone portrait stored sideways (Orientation 6) is read as the face it shows."""
  from conftest import shared_path
  upright = Image.open(shared_path('photos', '0.jpg')).convert('RGB')
  _save_with_orientation(upright, 1, tmp_path / 'upright.jpg')
  _save_with_orientation(upright, 6, tmp_path / 'sideways.jpg')
  a = pretrained_predictor.predict(str(tmp_path / 'upright.jpg'))
  b = pretrained_predictor.predict(str(tmp_path / 'sideways.jpg'))
  assert len(a) == len(b) >= 1
  np.testing.assert_allclose(b[0].landmarks[:, :2], a[0].landmarks[:, :2], atol=1.0)
