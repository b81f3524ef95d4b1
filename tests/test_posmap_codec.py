"""Position-map codec: bounded error, exact zeros, clear errors."""

import numpy as np
import pytest

from prnet_jax.data import posmap_codec as codec


def smooth_map(seed=0):
  rng = np.random.RandomState(seed)
  y, x = np.mgrid[0:256, 0:256].astype(np.float64)
  m = np.stack([x * rng.uniform(0.8, 1.2) - 20, y * 1.1 + 5,
                60 * np.exp(-((x - 128) ** 2 + (y - 120) ** 2) / 5000.0)], -1)
  m[:30] = 0  # outside the mesh
  m[:, 250:] = 0
  return m


@pytest.mark.parametrize('fmt', codec.FORMATS)
def test_round_trip_within_bound_and_zeros_exact(fmt):
  m = smooth_map()
  data = codec.encode(m, fmt)
  assert data[:3] == fmt.encode()
  out = codec.decode(data)
  assert out.shape == m.shape and out.dtype == np.float32
  assert np.abs(out - m).max() <= codec.MAX_ERROR + 1e-6
  assert np.all(out[:30] == 0) and np.all(out[:, 250:] == 0)
  assert len(data) < 0.5 * m.astype(np.float16).nbytes  # compresses a smooth map


def test_extreme_values_in_range():
  m = np.zeros((4, 5, 3))
  m[0, 0] = [-512, 511.9, 0.0078]
  out = codec.decode(codec.encode(m))
  assert np.abs(out - m).max() <= codec.MAX_ERROR + 1e-6


@pytest.mark.parametrize('value,message', [(np.nan, 'NaN or inf'), (600.0, r'outside the codec '
                                                                           r'range')])
def test_bad_maps_rejected(value, message):
  m = np.zeros((4, 4, 3))
  m[1, 1, 1] = value
  with pytest.raises(codec.PosmapCodecError, match=message):
    codec.encode(m)


def test_zigzag_is_a_bijection_of_16_bit_values_on_host_and_device():
  import jax.numpy as jnp
  d = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
  z = codec._zigzag(d)
  assert np.array_equal(np.sort(z), d)  # a permutation
  assert list(z[[0, 65535, 1, 65534]]) == [0, 1, 2, 3]  # 0, -1, 1, -2
  np.testing.assert_array_equal(codec._unzigzag(z).astype(np.uint16), d)
  np.testing.assert_array_equal(np.asarray(codec._unzigzag(jnp.asarray(z))), d)


def test_all_formats_and_the_device_give_the_same_bits():
  """PM1, PM2 and PM3 hold the same residuals; the accelerator's sums (jax, uint16 wrapping)
  give the host's float32 values exactly, batched, and a missing map decodes to zeros. The
  zigzag makes PM3 the smallest (its high byte plane is nearly all zeros)."""
  import jax
  maps = [smooth_map(0), smooth_map(1) * 0.5 - 100]
  host = [codec.decode(codec.encode(m)) for m in maps]
  for m, h in zip(maps, host):
    for fmt in codec.FORMATS[1:]:
      np.testing.assert_array_equal(codec.decode(codec.encode(m, fmt)), h)
      np.testing.assert_array_equal(codec.residuals(codec.encode(m)),
                                    codec.residuals(codec.encode(m, fmt)))
    planes = codec.residuals(codec.encode(m))
    assert (planes[1] == 0).mean() > 0.9
    assert len(codec.encode(m)) < len(codec.encode(m, 'PM2'))
  planes = np.stack([codec.residuals(codec.encode(m)) for m in maps])
  assert planes.shape == (2, 2, 256, 256, 3) and planes.dtype == np.uint8
  device = np.asarray(jax.jit(codec.integrate_on_device)(planes))
  np.testing.assert_array_equal(device, np.stack(host))
  zeros = codec.integrate(codec.zero_residuals((5, 7, 3)))
  assert zeros.shape == (5, 7, 3) and not zeros.any()


@pytest.mark.parametrize('fmt', codec.FORMATS)
def test_corrupt_records_rejected(fmt):
  data = codec.encode(smooth_map(), fmt)
  with pytest.raises(codec.PosmapCodecError, match='not an encoded position map'):
    codec.decode(b'XYZ' + data[3:])
  with pytest.raises(codec.PosmapCodecError, match='corrupt position map record'):
    codec.decode(data[:40])
  with pytest.raises(codec.PosmapCodecError, match='too short'):
    codec.decode(b'PM')


def test_unknown_format_refused_by_name():
  with pytest.raises(codec.PosmapCodecError, match="unknown position-map format 'PM9'"):
    codec.encode(smooth_map(), 'PM9')
