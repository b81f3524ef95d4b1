"""TensorFlow's checkpoint format read without TensorFlow (prnet_jax.serving.tf_checkpoint):
the real official .index, a bundle TensorFlow wrote (tests/data/tf_bundle), damage."""

import os
import shutil

import numpy as np
import pytest

from prnet_jax.serving import tf_checkpoint as tfc

from conftest import shared_path
from fixtures import ROOT
from tf_bundle_values import VALUES

SMALL = os.path.join(ROOT, 'tests', 'data', 'tf_bundle', 'small')


@pytest.mark.parametrize('n', [0, 1, 7, 4095, 4096, 4097, 9000, 65537])
def test_crc32c_equals_the_byte_by_byte_reference(n):
  data = np.random.RandomState(n).randint(0, 256, n).astype(np.uint8).tobytes()
  assert tfc.crc32c(data) == tfc.crc32c_serial(data)


def test_crc32c_known_value():
  assert tfc.crc32c(b'123456789') == 0xE3069283  # the standard check value


def test_the_real_official_index(official_variables_file):
  """All 545 entries of the official checkpoint's .index: the 245 PRNet variables with their
  names and shapes, two Adam slots for each trainable one, the beta powers; float32, packed
  end to end."""
  from test_convert_official import read_official_list
  index = shared_path('prnet-official', '256_256_resfcn256_weight.index')
  reader = tfc.TFCheckpoint(index[:-len('.index')])
  entries = reader.entries
  assert len(entries) == 545 and reader.num_shards == 1
  official = read_official_list(official_variables_file)
  model = {n: e.shape for n, e in entries.items() if not n.endswith(('/Adam', '/Adam_1'))
           and not n.startswith('beta')}
  assert model == official
  trainable = [n for n in official if '/moving_' not in n]  # BatchNorm statistics have none
  assert len(trainable) == 149
  for name in trainable:
    assert entries[f'{name}/Adam'].shape == entries[f'{name}/Adam_1'].shape == official[name]
  assert len(entries) == len(official) + 2 * len(trainable) + 2
  assert {n for n in entries if n.startswith('beta')} == {'beta1_power', 'beta2_power'}
  assert {e.dtype for e in entries.values()} == {1}  # DT_FLOAT
  spans = sorted((e.offset, e.size) for e in entries.values())
  assert spans[0][0] == 0
  for (offset, size), (next_offset, _) in zip(spans, spans[1:]):
    assert offset + size == next_offset
  total = spans[-1][0] + spans[-1][1]
  assert total == 4 * sum(int(np.prod(e.shape)) for e in entries.values())
  # The weights file is a separate download: reading a tensor names it.
  with pytest.raises(tfc.TFCheckpointError, match='256_256_resfcn256_weight.data-00000-of-00001: '
                     'cannot read'):
    reader.tensor('resfcn256/Conv/weights')


def test_a_bundle_tensorflow_wrote_reads_back_bit_identically():
  reader = tfc.TFCheckpoint(SMALL)
  assert set(reader.entries) == set(VALUES)
  for name, value in VALUES.items():
    got = reader.tensor(name)
    assert got.dtype == np.asarray(value).dtype and got.shape == np.shape(value), name
    np.testing.assert_array_equal(got, value)


def test_the_same_as_tensorflows_own_reader():
  tf = pytest.importorskip('tensorflow', reason='TensorFlow is an optional extra; CI has it')
  tf_reader = tf.train.load_checkpoint(SMALL)
  assert tf_reader.get_variable_to_shape_map() == {
      n: list(s) for n, s in tfc.TFCheckpoint(SMALL).shape_map().items()}
  for name in VALUES:
    ours = tfc.TFCheckpoint(SMALL).tensor(name)
    theirs = tf_reader.get_tensor(name)
    assert ours.tobytes() == np.asarray(theirs).tobytes() and ours.dtype == theirs.dtype


def _copy(tmp_path):
  for ext in ('.index', '.data-00000-of-00001'):
    shutil.copy(SMALL + ext, str(tmp_path / 'small') + ext)
  return str(tmp_path / 'small')


def test_damage_is_named_never_returned(tmp_path):
  prefix = _copy(tmp_path)
  data = bytearray(open(prefix + '.data-00000-of-00001', 'rb').read())
  entry = tfc.TFCheckpoint(prefix).entries['scope/Conv/weights']
  data[entry.offset + 5] ^= 0x01  # one bit of one weight
  open(prefix + '.data-00000-of-00001', 'wb').write(bytes(data))
  with pytest.raises(tfc.TFCheckpointError, match=r'small.data-00000-of-00001: damaged '
                     r'\(scope/Conv/weights fails its checksum\)'):
    tfc.TFCheckpoint(prefix).tensor('scope/Conv/weights')
  np.testing.assert_array_equal(tfc.TFCheckpoint(prefix).tensor('counts'), VALUES['counts'])

  open(prefix + '.data-00000-of-00001', 'wb').write(bytes(data[:entry.offset + 8]))
  with pytest.raises(tfc.TFCheckpointError, match='small.data-00000-of-00001: truncated'):
    tfc.TFCheckpoint(prefix).tensor('scope/Conv/weights')

  index = bytearray(open(SMALL + '.index', 'rb').read())
  index[20] ^= 0x40
  open(prefix + '.index', 'wb').write(bytes(index))
  with pytest.raises(tfc.TFCheckpointError, match=r'small.index: damaged \(a table block fails '
                     r'its checksum\)'):
    tfc.TFCheckpoint(prefix)
  open(prefix + '.index', 'wb').write(b'not an index at all, just some text' * 3)
  with pytest.raises(tfc.TFCheckpointError, match='small.index: not a TensorFlow checkpoint'):
    tfc.TFCheckpoint(prefix)
