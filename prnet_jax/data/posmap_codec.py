"""Lossy-but-bounded compression of UV position maps for dataset records.

A 256x256x3 float16 map is 384 KiB and float16 has only 1/8 px resolution above 128 px. We store
positions as uint16 fixed point (1/64 px steps over [-512, 512) px, i.e. error <= 1/128 px) and
take a 2D difference (along columns, then rows; position maps are smooth, so the residuals are
small). Zeros (outside the mesh) stay exact. Three formats of the same residuals:

* `PM3` (written): the residuals zigzag-coded (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...: small
  values of either sign become small unsigned ones, so the high byte is nearly always 0), their
  low and high bytes as two planes, zstd level 3. The host's decode is one zstd call; the byte
  planes go to the accelerator as they are (`DecodeExample(posmap_residuals=True)`), which
  joins them, undoes the zigzag and runs the two sums (`integrate_on_device`).
* `PM2` (read): the same without the zigzag (a negative residual's high byte is 0xFF, so the
  high plane carried the residuals' signs: 1.5x the bytes and 2x zstd's decode time).
* `PM1` (read): interleaved uint16, zlib level 1.

`residuals` returns every format as PM3's planes; all decode to the same float32 values, on the
host (`decode`) or on the device, bit for bit: zigzag coding is a bijection of 16-bit values,
and the sums wrap mod 2^16 exactly as the encoder's differences did.
`benchmarks/input_pipeline.py` measures the formats.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

MAGIC = b'PM3'
FORMATS = ('PM3', 'PM2', 'PM1')  # written, then still read
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


def _zigzag(d: np.ndarray) -> np.ndarray:
  """uint16 residuals (two's complement) -> zigzag uint16 (same shape)."""
  v = d.view(np.int16).astype(np.int32)
  return ((v << 1) ^ (v >> 15)).astype(np.uint16)


def _unzigzag(z):
  """Zigzag uint16 -> uint16 residuals; numpy or jax.numpy arrays (uint16 wrapping)."""
  return (z >> 1) ^ (0 - (z & 1))


def _planes(u: np.ndarray) -> np.ndarray:
  return np.stack([(u & 0xFF).astype(np.uint8), (u >> 8).astype(np.uint8)])


def encode(pos_map: np.ndarray, fmt: str = 'PM3') -> bytes:
  """(H, W, C) float position map -> bytes in `fmt` ('PM3'; 'PM2', 'PM1': older formats,
  for tests and benchmarks)."""
  if fmt not in FORMATS:
    raise PosmapCodecError(f'unknown position-map format {fmt!r}; one of {FORMATS}')
  d = _difference(quantize(pos_map))  # mod 2^16
  h, w, c = d.shape
  header = _HEADER.pack(fmt.encode(), h, w, c)
  if fmt == 'PM1':
    return header + zlib.compress(d.tobytes(), 1)
  planes = _planes(_zigzag(d) if fmt == 'PM3' else d)
  return header + _zstd().ZstdCompressor(level=ZSTD_LEVEL).compress(planes.tobytes())


def residuals(data: bytes) -> np.ndarray:
  """bytes -> (2, H, W, C) uint8: the low and high bytes of the zigzag-coded uint16 residuals
  (the host part of `decode`; for PM3 records a view of the decompressed buffer, older formats
  are converted)."""
  if len(data) < _HEADER.size:
    raise PosmapCodecError(f'position map record too short ({len(data)} bytes)')
  magic, h, w, c = _HEADER.unpack_from(data)
  if magic.decode('latin-1') not in FORMATS:
    raise PosmapCodecError(f'not an encoded position map (magic {magic!r})')
  try:
    if magic == b'PM1':
      raw = zlib.decompress(data[_HEADER.size:])
    else:
      raw = _zstd().ZstdDecompressor().decompress(data[_HEADER.size:],
                                                  max_output_size=2 * h * w * c)
  except (zlib.error, Exception) as e:  # zstandard.ZstdError is an Exception
    if isinstance(e, PosmapCodecError):
      raise
    raise PosmapCodecError(f'corrupt position map record ({e})') from e
  if len(raw) != 2 * h * w * c:
    raise PosmapCodecError(f'position map record holds {len(raw)} bytes, expected {2 * h * w * c}')
  if magic == MAGIC:
    return np.frombuffer(raw, np.uint8).reshape(2, h, w, c)
  if magic == b'PM2':
    p = np.frombuffer(raw, np.uint8).reshape(2, h, w, c)
    d = p[0].astype(np.uint16) | (p[1].astype(np.uint16) << 8)
  else:
    d = np.frombuffer(raw, '<u2').reshape(h, w, c).astype(np.uint16)
  return _planes(_zigzag(d))


def zero_residuals(shape: tuple[int, int, int]) -> np.ndarray:
  """The residuals of an all-zero (H, W, C) map (a record without a map)."""
  d = np.zeros(tuple(shape), np.uint16)
  d[0, 0] = int(OFFSET * SCALE)  # q = 32768 everywhere: one step at the origin
  return _planes(_zigzag(d))


def integrate(planes: np.ndarray) -> np.ndarray:
  """(..., 2, H, W, C) uint8 residual byte planes -> float32 positions, on the host."""
  z = planes[..., 0, :, :, :].astype(np.uint16) | (planes[..., 1, :, :, :].astype(np.uint16) << 8)
  d = _unzigzag(z)  # uint16: the arithmetic wraps
  q = np.cumsum(np.cumsum(d, axis=-3, dtype=np.uint16), axis=-2, dtype=np.uint16)
  return q.astype(np.float32) / np.float32(SCALE) - np.float32(OFFSET)


def integrate_on_device(planes):
  """`integrate` in jax.numpy (jit it; batched (..., 2, H, W, C) uint8 -> float32)."""
  import jax.numpy as jnp
  z = (planes[..., 0, :, :, :].astype(jnp.uint16)
       | (planes[..., 1, :, :, :].astype(jnp.uint16) << 8))
  d = _unzigzag(z)
  q = jnp.cumsum(jnp.cumsum(d, axis=-3, dtype=jnp.uint16), axis=-2, dtype=jnp.uint16)
  return q.astype(jnp.float32) / jnp.float32(SCALE) - jnp.float32(OFFSET)


def decode(data: bytes) -> np.ndarray:
  """bytes -> (H, W, C) float32 position map."""
  return integrate(residuals(data))
