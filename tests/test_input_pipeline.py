"""grain input pipeline: decoding, shuffling by seed, process shards, exact resume."""

import os
import subprocess
import sys

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from prnet_jax.data import input_pipeline as ip

from datasets import synthetic_faces

NUM = 24


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  config = synthetic_faces.SyntheticFacesConfig(name='pipe', image_size=64, num_train=NUM,
                                                num_test=4, seed=0)
  builder = synthetic_faces.SyntheticFaces(config=config, data_dir=str(data_dir),
                                           file_format='array_record', num_workers=0)
  builder.download_and_prepare(file_format='array_record')
  return builder, str(data_dir)


@pytest.fixture(scope='module')
def source(built):
  return built[0].as_data_source(split='train')


@pytest.mark.slow(reason='subprocess')
def test_a_built_dataset_is_read_without_the_builders_code(built, tmp_path):
  """Where `datasets` is another package (Hugging Face's, on Colab) or absent, a built dataset
  reads the same: from its files only."""
  shadow = tmp_path / 'datasets'
  shadow.mkdir()
  (shadow / '__init__.py').write_text('raise ImportError("not the prnet-jax builders")\n')
  code = (f'import json, sys; from prnet_jax.data import input_pipeline as ip; '
          f's = ip.data_source("synthetic_faces/pipe", "train", {built[1]!r}); '
          f'print(json.dumps([len(s), s[3]["file_name"].decode(), '
          f'"datasets" in sys.modules]))')
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  r = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  import json
  n, name, imported = json.loads(r.stdout.strip().splitlines()[-1])
  assert (n, name) == (NUM, built[0].as_data_source(split='train')[3]['file_name'].decode())
  assert not imported


def sharding():
  mesh = Mesh(np.array(jax.devices()), ('data',))
  return NamedSharding(mesh, P('data'))


def ids(batch):
  # landmark coordinates identify an example
  return [tuple(np.round(np.asarray(l)[0, :2], 3)) for l in batch['landmarks']]


def test_unbuilt_dataset_says_how_to_build(tmp_path):
  with pytest.raises(ip.DatasetNotFoundError, match=r'python -m datasets.build '
                                                    r'synthetic_faces/small'):
    ip.data_source('synthetic_faces/small', 'train', str(tmp_path))
  with pytest.raises(ip.DatasetNotFoundError, match=r'(?s)--manual_dir=DIR.*300W_LP'):
    ip.data_source('prnet_300wlp', 'train', str(tmp_path))


def test_batches_shapes_and_epoch_coverage(source):
  it = iter(ip.train_loader(source, global_batch_size=8, seed=0, resolution=64))
  seen = []
  for _ in range(NUM // 8):
    b = next(it)
    assert b['image'].shape == (8, 64, 64, 3) and b['image'].dtype == np.uint8
    assert b['position_map'].shape == (8, 64, 64, 3) and b['position_map'].dtype == np.float32
    assert b['landmarks'].shape == (8, 68, 3) and b['yaw_bucket'].shape == (8,)
    seen += ids(b)
  assert len(set(seen)) == NUM  # one epoch = every example once


def test_seed_fixes_the_order(source):
  def first(seed):
    return ids(next(iter(ip.train_loader(source, 8, seed, 64))))
  assert first(3) == first(3)
  assert first(3) != first(4)


def test_resize_to_model_resolution_scales_positions(source):
  b32 = next(iter(ip.train_loader(source, 4, 0, 32)))
  b64 = next(iter(ip.train_loader(source, 4, 0, 64)))
  assert b32['image'].shape == (4, 32, 32, 3)
  # x, y follow the resized pixel centres ((x + 0.5) / 2 - 0.5); z halves.
  np.testing.assert_allclose(b32['landmarks'][..., :2], b64['landmarks'][..., :2] / 2 - 0.25,
                             rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(b32['landmarks'][..., 2], b64['landmarks'][..., 2] / 2, rtol=1e-6)
  assert b32['position_map'].max() == pytest.approx(b64['position_map'].max() / 2, rel=0.05)


def test_process_slices_compose_the_same_global_batches(source, monkeypatch):
  whole = iter(ip.train_loader(source, 8, 0, 64))
  expected = [ids(next(whole)) for _ in range(4)]
  parts = []
  for index in range(2):
    monkeypatch.setattr(jax, 'process_count', lambda: 2)
    monkeypatch.setattr(jax, 'process_index', lambda i=index: i)
    it = iter(ip.train_loader(source, 8, 0, 64))  # 4 rows per process
    parts.append([ids(next(it)) for _ in range(4)])
  for b in range(4):
    assert parts[0][b] + parts[1][b] == expected[b]


def test_resumed_iterator_sees_the_same_batches(source):
  loader = ip.train_loader(source, 4, seed=1, resolution=64)
  first = ip.DeviceIterator(loader, sharding())
  for _ in range(5):  # crosses the epoch boundary (6 batches per epoch) later
    next(first)
  state = first.get_state()
  expected = [next(first) for _ in range(4)]
  first.close()
  resumed = ip.DeviceIterator(ip.train_loader(source, 4, seed=1, resolution=64), sharding(),
                              state=state)
  got = [next(resumed) for _ in range(4)]
  resumed.close()
  for e, g in zip(expected, got):
    assert isinstance(g['image'], jax.Array)
    for k in ip.FIELDS:
      np.testing.assert_array_equal(np.asarray(e[k]), np.asarray(g[k]))
  # A different position gives different batches (the check can fail).
  assert not np.array_equal(np.asarray(expected[0]['landmarks']),
                            np.asarray(expected[1]['landmarks']))


def test_set_state_rewinds(source):
  it = ip.DeviceIterator(ip.train_loader(source, 4, seed=2, resolution=64), sharding())
  start = it.get_state()
  a = [np.asarray(next(it)['landmarks']) for _ in range(3)]
  it.set_state(start)
  b = [np.asarray(next(it)['landmarks']) for _ in range(3)]
  it.close()
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_resized_positions_stay_on_the_image_content():
  """A bright 16x16 block whose centre is a landmark, resized 64 -> 16 by the decoder: the
  landmark lands on the block's centre of mass in the small image (the pixel-centre rule;
  scaling by k alone would miss it by 0.375 px)."""
  from prnet_jax.data import image_io, posmap_codec
  image = np.zeros((64, 64, 3), np.uint8)
  image[16:32, 32:48] = 255
  landmarks = np.zeros((68, 3), np.float32)
  landmarks[:] = [39.5, 23.5, 10.0]               # the block's centre, pixel-centre coordinates
  pos = np.zeros((64, 64, 3), np.float32)
  pos[16:32, 32:48] = [39.5, 23.5, 10.0]
  rec = {'image': image_io.encode_jpeg(image, quality=100),
         'position_map': posmap_codec.encode(pos), 'landmarks_3d': landmarks, 'yaw_bucket': 0}
  ex = ip.DecodeExample(16).map(rec)
  w = ex['image'][..., 0].astype(np.float64)
  ys, xs = np.mgrid[:16, :16]
  centre = [(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()]
  np.testing.assert_allclose(ex['landmarks'][0, :2], centre, atol=0.05)
  assert ex['landmarks'][0, 2] == pytest.approx(2.5)
  inside = ex['position_map'][6, 10]               # its filter support inside the block
  np.testing.assert_allclose(inside[:2], centre, atol=0.05)
  assert not ex['position_map'][0, 0].any()        # the background stays zero


def test_residual_batches_finished_on_the_devices_equal_host_decoding(source):
  """train_loader(posmap_residuals=True) + DeviceIterator: the same global batches, bit for
  bit, as decoding the maps on the host; a resize (64 -> 32) falls back to host decoding."""
  for resolution in (64, 32):
    host = ip.DeviceIterator(ip.train_loader(source, 4, 3, resolution), sharding())
    dev = ip.DeviceIterator(ip.train_loader(source, 4, 3, resolution,
                                            posmap_residuals=True), sharding())
    for _ in range(2):
      a, b = next(host), next(dev)
      assert sorted(a) == sorted(b)
      for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
      assert b['position_map'].dtype == np.float32
      assert b['position_map'].sharding.is_equivalent_to(sharding(), 4)
    host.close()
    dev.close()
