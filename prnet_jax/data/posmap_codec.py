"""Lossy-but-bounded compression of UV position maps for dataset records.

A 256x256x3 float16 map is 384 KiB and float16 has only 1/8 px resolution above 128 px. We store
positions as uint16 fixed point (1/64 px steps over [-512, 512) px, i.e. error <= 1/128 px) and
take a 2D difference (along columns, then rows; position maps are smooth, so the residuals are
small). Zeros (outside the mesh) stay exact. Two formats of the same residuals:

* `PM2` (written): the residuals' low and high bytes as two planes (the high plane is nearly
  constant), zstd level 3. The host's decode is one zstd call; the byte planes go to the
  accelerator as they are (`DecodeExample(posmap_residuals=True)`), which joins them and runs
  the two sums (`integrate_on_device`).
* `PM1` (read): interleaved uint16, zlib level 1 (records built before `PM2`).

Both decode to the same float32 values, on the host (`decode`) or on the device, bit for bit:
the sums wrap mod 2^16 exactly as the encoder's differences did. `benchmarks/input_pipeline.py`
measures the formats.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

MAGIC = b'PM2'
MAGIC_ZLIB = b'PM1'
SCALE = 64.0             # steps per pixel
OFFSET = 512.0           # representable range [-OFFSET, OFFSET) pixels
MAX_ERROR = 0.5 / SCALE  # rounding error bound, pixels
ZSTD_LEVEL = 3
_HEADER = struct.Struct('<3sHHB')  # magic, height, width, channels


class PosmapCodecError(ValueError):
  pass


def _zstd():
  try:
    import zstandard
  except ImportError as e:  # only with the core install: datasets need the train extra
    raise PosmapCodecError('position-map records need the zstandard package '
                           '(pip install "prnet-jax[train]")') from e
  return zstandard


def quantize(pos_map: np.ndarray) -> np.ndarray:
  """(H, W, C) float positions -> uint16 fixed point. Raises if a value is outside
  [-512, 512) or NaN."""
  pos_map = np.asarray(pos_map, np.float64)
  if pos_map.ndim != 3:
    raise PosmapCodecError(f'position map must be (H, W, C), got shape {pos_map.shape}')
  if not np.all(np.isfinite(pos_map)):
    raise PosmapCodecError('position map contains NaN or inf')
  lo, hi = pos_map.min(), pos_map.max()
  if lo < -OFFSET or hi >= OFFSET - 1.0 / SCALE:
    raise PosmapCodecError(f'position map values [{lo:.1f}, {hi:.1f}] outside the codec range '
                           f'[-{OFFSET:.0f}, {OFFSET:.0f}) px')
  return np.round((pos_map + OFFSET) * SCALE).astype(np.uint16)


def _difference(q: np.ndarray) -> np.ndarray:
  return np.diff(np.diff(q, axis=1, prepend=np.uint16(0)), axis=0, prepend=np.uint16(0))


def encode(pos_map: np.ndarray, zlib_v1: bool = False) -> bytes:
  """(H, W, C) float position map -> `PM2` bytes (`zlib_v1`: the older `PM1`)."""
  d = _difference(quantize(pos_map))  # mod 2^16
  h, w, c = d.shape
  if zlib_v1:
    return _HEADER.pack(MAGIC_ZLIB, h, w, c) + zlib.compress(d.tobytes(), 1)
  planes = np.stack([(d & 0xFF).astype(np.uint8), (d >> 8).astype(np.uint8)])
  return (_HEADER.pack(MAGIC, h, w, c)
          + _zstd().ZstdCompressor(level=ZSTD_LEVEL).compress(planes.tobytes()))


def residuals(data: bytes) -> np.ndarray:
  """bytes -> (2, H, W, C) uint8: the low and high bytes of the uint16 residuals (the host
  part of `decode`; a view of the decompressed buffer where the format allows)."""
  if len(data) < _HEADER.size:
    raise PosmapCodecError(f'position map record too short ({len(data)} bytes)')
  magic, h, w, c = _HEADER.unpack_from(data)
  if magic not in (MAGIC, MAGIC_ZLIB):
    raise PosmapCodecError(f'not an encoded position map (magic {magic!r})')
  try:
    if magic == MAGIC:
      raw = _zstd().ZstdDecompressor().decompress(data[_HEADER.size:],
                                                  max_output_size=2 * h * w * c)
    else:
      raw = zlib.decompress(data[_HEADER.size:])
  except (zlib.error, Exception) as e:  # zstandard.ZstdError is an Exception
    if isinstance(e, PosmapCodecError):
      raise
    raise PosmapCodecError(f'corrupt position map record ({e})') from e
  if len(raw) != 2 * h * w * c:
    raise PosmapCodecError(f'position map record holds {len(raw)} bytes, expected {2 * h * w * c}')
  if magic == MAGIC:
    return np.frombuffer(raw, np.uint8).reshape(2, h, w, c)
  return np.moveaxis(np.frombuffer(raw, np.uint8).reshape(h, w, c, 2), -1, 0)  # little-endian


def zero_residuals(shape: tuple[int, int, int]) -> np.ndarray:
  """The residuals of an all-zero (H, W, C) map (a record without a map)."""
  d = np.zeros((2,) + tuple(shape), np.uint8)
  d[1, 0, 0] = int(OFFSET * SCALE) >> 8  # q = 32768 everywhere: one step at the origin
  return d


def integrate(planes: np.ndarray) -> np.ndarray:
  """(..., 2, H, W, C) uint8 residual byte planes -> float32 positions, on the host."""
  d = planes[..., 0, :, :, :].astype(np.uint16) | (planes[..., 1, :, :, :].astype(np.uint16) << 8)
  q = np.cumsum(np.cumsum(d, axis=-3, dtype=np.uint16), axis=-2, dtype=np.uint16)
  return q.astype(np.float32) / np.float32(SCALE) - np.float32(OFFSET)


def integrate_on_device(planes):
  """`integrate` in jax.numpy (jit it; batched (..., 2, H, W, C) uint8 -> float32)."""
  import jax.numpy as jnp
  d = (planes[..., 0, :, :, :].astype(jnp.uint16)
       | (planes[..., 1, :, :, :].astype(jnp.uint16) << 8))
  q = jnp.cumsum(jnp.cumsum(d, axis=-3, dtype=jnp.uint16), axis=-2, dtype=jnp.uint16)
  return q.astype(jnp.float32) / jnp.float32(SCALE) - jnp.float32(OFFSET)


def decode(data: bytes) -> np.ndarray:
  """bytes -> (H, W, C) float32 position map."""
  return integrate(residuals(data))
