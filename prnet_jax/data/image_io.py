"""Images: decoding and checks, one module for every way an image enters the package.

* `load_photo`: what prediction, the demo and the applications take (a path, encoded bytes or
  an array; RGB/BGR/gray/RGBA, uint8 or float in [0, 1]) -> (H, W, 3) uint8 RGB. Lenient about
  the format (gray is repeated, alpha composited over white), strict about size: images over
  `MAX_PIXELS` are refused before they are decoded. Raises `ImageError` naming the input.
* `load_sample_image`: a dataset builder's image file -> (H, W, 3) uint8 RGB. Strict: gray,
  alpha, 16-bit and float images raise `SampleError` (a training set of RGB photos should not
  silently mix them).
* `encode_jpeg` / `decode_record`: the JPEG bytes of dataset records.
"""

from __future__ import annotations

import io
import os
from typing import Any, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from prnet_jax.data.readers import SampleError

JPEG_QUALITY = 95
MAX_PIXELS = 50_000_000  # larger photos are refused with a message (not an out-of-memory crash)


class ImageError(ValueError):
  """An image that cannot be used; the message names the input and the problem."""


# Single-channel modes wider than 8 bits: 16-bit (PNG, TIFF), 32-bit integer and float (TIFF).
WIDE_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
  """A wide single-channel image -> (H, W) uint8: 16-bit values over their full range, float
  values as [0, 1] (or [0, 255] when larger), 32-bit integers as 16-bit when above 255."""
  a = arr.astype(np.float64)
  if mode == 'F':
    finite = a[np.isfinite(a)]
    a = np.nan_to_num(a) * (255.0 if finite.size == 0 or finite.max() <= 1.0 else 1.0)
  elif mode.startswith('I;16') or a.max() > 255:
    a = a / 257.0
  return np.clip(np.round(a), 0, 255).astype(np.uint8)


_EXIF_ORIENTATION = 0x0112
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def load_photo(image: Any, channel_order: str = 'RGB', name: Optional[str] = None,
               max_side: Optional[int] = None) -> np.ndarray:
  """A path, encoded bytes (JPEG, PNG, ...) or array (RGB/BGR/gray/RGBA, uint8 or float in
  [0, 1], any size) -> (H, W, 3) uint8 RGB. `channel_order` applies to arrays; `name` names
  the input in errors (default: the path). Raises ImageError naming the input. Files and
  bytes are turned upright by their EXIF Orientation tag, as photo viewers show them.

  `max_side`: files and bytes are shrunk (aspect kept) so that neither side exceeds it, JPEGs
  already while decoding (memory bounded by the output, not the photo: a server's uploads)."""
  name = name or (image if isinstance(image, str) else 'image array')
  if isinstance(image, (str, bytes, bytearray)):
    if isinstance(image, str) and not os.path.isfile(image):
      raise ImageError(f'{image}: file not found')
    try:
      with Image.open(image if isinstance(image, str) else io.BytesIO(image)) as im:
        if im.width * im.height > MAX_PIXELS:
          raise ImageError(f'{name}: image too large ({im.width}x{im.height}); resize it '
                           f'below {MAX_PIXELS / 1e6:.0f} megapixels')
        if max_side and max(im.size) > max_side:
          scale = max_side / max(im.size)
          target = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
          im.draft('RGB', target)  # JPEG: decode at 1/2, 1/4 or 1/8 size; others: no-op
          im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        # Phones store portraits sideways with an EXIF Orientation tag; the pixels are turned
        # as viewers show them (PIL's exif_transpose table), after any shrinking.
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in _ORIENTATION_FIX:
          im = im.transpose(_ORIENTATION_FIX[orientation])
        if im.mode in WIDE_MODES:  # PIL's convert('RGB') clips these: scale them instead
          arr = _to_uint8(np.asarray(im), im.mode)
        else:
          im = im.convert('RGBA') if im.mode in ('RGBA', 'LA', 'PA') else im.convert('RGB')
          arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
      # A path's error says why; for bytes PIL's message names only an in-memory buffer.
      why = f' ({e})' if isinstance(image, str) else ''
      raise ImageError(f'{name}: not a readable image{why}') from e
    channel_order = 'RGB'
  else:
    arr = np.asarray(image)
  if arr.size == 0 or arr.ndim not in (2, 3) or min(arr.shape[:2]) < 8:
    raise ImageError(f'{name}: not an image of at least 8x8 pixels (shape {arr.shape})')
  if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
    raise ImageError(f'{name}: image too large ({arr.shape[1]}x{arr.shape[0]}); resize it '
                     f'below {MAX_PIXELS / 1e6:.0f} megapixels')
  if arr.dtype != np.uint8:
    arr = arr.astype(np.float64)
    if arr.max() <= 1.0:
      arr = arr * 255
    arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
  if arr.ndim == 2:
    arr = np.repeat(arr[..., None], 3, -1)
  if arr.shape[-1] == 4:  # composite over white
    a = arr[..., 3:].astype(np.float32) / 255
    arr = np.round(arr[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
  elif arr.shape[-1] == 1:
    arr = np.repeat(arr, 3, -1)
  elif arr.shape[-1] != 3:
    raise ImageError(f'{name}: {arr.shape[-1]} channels (expected 1, 3 or 4)')
  if channel_order.upper() == 'BGR':
    arr = arr[..., ::-1]
  return np.ascontiguousarray(arr)


def load_sample_image(path: str) -> np.ndarray:
  """(H, W, 3) uint8 RGB image. Missing, unreadable, grayscale, RGBA/transparent and 16-bit
  images raise SampleError (a training set of RGB photos should not silently mix them)."""
  if not os.path.isfile(path):
    raise SampleError(path, 'image file missing')
  try:
    with Image.open(path) as im:
      im.load()
      mode = im.mode
      if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
        raise SampleError(path, f'16-bit or float image (mode {mode}); expected 8-bit RGB')
      if mode in ('L', 'LA', '1'):
        raise SampleError(path, f'grayscale image (mode {mode}); expected 8-bit RGB')
      if mode in ('RGBA', 'LA', 'PA') or (mode == 'P' and 'transparency' in im.info):
        raise SampleError(path, f'image has an alpha channel (mode {mode}); expected 8-bit RGB')
      rgb = np.asarray(im.convert('RGB'))
  except SampleError:
    raise
  except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
    raise SampleError(path, f'cannot decode image ({type(e).__name__}: {e})') from e
  if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise SampleError(path, f'image has no pixels (shape {rgb.shape})')
  return rgb


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """(H, W, 3) uint8 -> JPEG bytes, as dataset records store images."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


def decode_record(data: bytes) -> np.ndarray:
  """A dataset record's encoded JPEG/PNG bytes (written by `encode_jpeg`) -> (H, W, 3) uint8.

  OpenCV decodes (~1.4x faster than Pillow, the same pixels: both are libjpeg-turbo); what it
  cannot read goes to Pillow, whose error names the problem."""
  import cv2
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
  if image is not None and image.ndim == 3 and image.dtype == np.uint8:
    return image
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert('RGB'))
