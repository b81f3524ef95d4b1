"""TFDS builders on small fixtures in the real formats; bad input is reported and skipped."""

import os
import shutil

import numpy as np
from PIL import Image
import pytest
from scipy import io as sio

from prnet_jax.data import image_io, posmap_codec, readers
from prnet_jax.faces import face_model as fm

import datasets  # noqa: F401
from datasets import build as build_lib
from datasets import synthetic_faces
import fixtures


def read_all(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def test_synthetic_faces_builds_and_reads_back(tmp_path):
  config = synthetic_faces.SyntheticFacesConfig(name='custom', image_size=64, num_train=5,
                                                num_test=2, seed=7)
  builder = synthetic_faces.SyntheticFaces(config=config, data_dir=str(tmp_path),
                                           file_format='array_record', num_workers=0)
  builder.download_and_prepare(file_format='array_record')
  assert builder.info.splits['train'].num_examples == 5
  assert builder.info.splits['test'].num_examples == 2
  source = builder.as_data_source(split='train')
  names = sorted(source[i]['file_name'].decode() for i in range(len(source)))
  assert names == [f'synthetic/{s:09d}' for s in range(7, 12)]
  ex = source[0]
  image = image_io.decode_record(ex['image'])
  pos = posmap_codec.decode(ex['position_map'])
  assert image.shape == (64, 64, 3) and pos.shape == (64, 64, 3)
  from prnet_jax.worlds.procedural_world import SyntheticWorld
  world = SyntheticWorld(image_size=64, uv_resolution=64)
  seed = int(ex['file_name'].decode().split('/')[1])
  expected = world.sample(seed)
  np.testing.assert_allclose(pos, expected.position_map, atol=posmap_codec.MAX_ERROR + 1e-5)
  np.testing.assert_allclose(ex['landmarks_3d'], expected.landmarks)
  assert np.abs(image.astype(int) - expected.image).mean() < 6  # JPEG q95


@pytest.mark.slow(reason='builds synthetic_faces/tiny')
def test_a_build_removes_what_an_interrupted_build_left(tmp_path, capsys):
  version = str(synthetic_faces.SyntheticFaces.VERSION)
  stale = tmp_path / 'synthetic_faces' / 'tiny' / f'incomplete.AB12CD_{version}'
  (stale / 'sub').mkdir(parents=True)
  (stale / 'sub' / 'shard').write_bytes(b'x' * 2_000_000)
  builder = build_lib.build('synthetic_faces/tiny', data_dir=str(tmp_path), num_workers=0)
  assert builder.is_prepared() and not stale.exists()
  assert f'removed {stale} (2.0 MB), left by an interrupted build' in capsys.readouterr().out
  assert sorted(os.listdir(tmp_path / 'synthetic_faces' / 'tiny')) == [version]


@pytest.mark.slow(reason='dataset builds in worker processes')
def test_ict_tiny_builds_with_workers_deterministically(tmp_path):
  """The ICT config, built by two worker processes in batches, holds the world's samples of
  the records' seeds; a rebuild inline gives the same records."""
  import dataclasses

  from prnet_jax.worlds.ict_world import ICTWorld, ICTWorldConfig
  built = {}
  for workers in (2, 0):
    builder = build_lib.make_builder('synthetic_faces/ict_tiny', str(tmp_path / str(workers)),
                                     num_workers=workers)
    builder.download_and_prepare(file_format='array_record')
    built[workers] = read_all(builder, 'test')
  assert len(built[2]) == 8
  world = ICTWorld(dataclasses.replace(ICTWorldConfig(), image_size=64, uv_resolution=64))
  for a, b in zip(built[2][:3], built[0][:3]):
    assert a['file_name'] == b['file_name'] and a['image'] == b['image']
    expected = world.sample(int(a['file_name'].decode().split('/')[1]))
    pos = posmap_codec.decode(a['position_map'])
    np.testing.assert_allclose(pos, expected.position_map, atol=posmap_codec.MAX_ERROR + 1e-5)
    np.testing.assert_allclose(a['landmarks_3d'], expected.landmarks)
    image = image_io.decode_record(a['image'])
    assert np.abs(image.astype(int) - expected.image).mean() < 6  # JPEG q95


@pytest.fixture
def manual_300wlp(tmp_path):
  """A manual dir with BFM/ (fixture schema) and 300W_LP/{AFW,HELEN_Flip}/ with 3 good samples."""
  manual = tmp_path / 'manual'
  fixtures.write_bfm_fixture(str(manual / 'BFM'))
  rng = np.random.RandomState(0)
  fixtures.write_300wlp_sample(str(manual / '300W_LP' / 'AFW'), 'AFW_1_0', rng)
  fixtures.write_300wlp_sample(str(manual / '300W_LP' / 'AFW'), 'AFW_1_1', rng)
  fixtures.write_300wlp_sample(str(manual / '300W_LP' / 'HELEN_Flip'), 'HELEN_2_0', rng)
  return manual


def build_300wlp(manual, data_dir, **kw):
  return build_lib.build('prnet_300wlp', data_dir=str(data_dir), manual_dir=str(manual),
                         num_workers=kw.pop('num_workers', 0), **kw)


@pytest.mark.slow(reason='builds a dataset')
def test_300wlp_builds_with_consistent_ground_truth(manual_300wlp, tmp_path):
  builder = build_300wlp(manual_300wlp, tmp_path / 'data', num_workers=2)  # worker processes
  examples = read_all(builder, 'train')
  assert sorted(e['file_name'].decode() for e in examples) == [
      'AFW/AFW_1_0', 'AFW/AFW_1_1', 'HELEN_Flip/HELEN_2_0']
  model = fm.load_bfm(str(manual_300wlp / 'BFM' / 'BFM.mat'),
                      str(manual_300wlp / 'BFM' / 'BFM_UV.mat'))
  assets = fm.derive_uv_assets(model)
  for ex in examples:
    pos = posmap_codec.decode(ex['position_map'])
    np.testing.assert_allclose(assets.landmarks(pos), ex['landmarks_3d'], atol=0.02)
    assert image_io.decode_record(ex['image']).shape == (256, 256, 3)
    mat = sio.loadmat(str(manual_300wlp / '300W_LP' / (ex['file_name'].decode() + '.mat')))
    np.testing.assert_allclose(ex['pose'], mat['Pose_Para'][0], rtol=1e-6)
    assert ex['yaw_bucket'] == readers.yaw_bucket(mat['Pose_Para'][0, 1])
    # 2D landmarks (pt2d) go through the same crop transform
    t = ex['crop_transform']
    np.testing.assert_allclose(ex['landmarks_2d'], mat['pt2d'].T @ t[:2, :2].T + t[:2, 2],
                               rtol=1e-4, atol=1e-3)


def corrupt(manual, case):
  """Adds one broken sample of the given kind to AFW/; returns its file stem and message."""
  folder = str(manual / '300W_LP' / 'AFW')
  rng = np.random.RandomState(hash(case) % 1000)
  stem = f'BAD_{case}'
  path = os.path.join(folder, stem)
  if case == 'truncated_mat':
    fixtures.write_300wlp_sample(folder, stem, rng)
    data = open(path + '.mat', 'rb').read()
    open(path + '.mat', 'wb').write(data[:len(data) // 3])
    return stem, 'cannot read .mat'
  if case == 'missing_field':
    fixtures.write_300wlp_sample(folder, stem, rng)
    m = sio.loadmat(path + '.mat')
    sio.savemat(path + '.mat', {k: v for k, v in m.items()
                                if not k.startswith('__') and k != 'Exp_Para'})
    return stem, ".mat lacks field 'Exp_Para'"
  if case == 'missing_image':
    fixtures.write_300wlp_sample(folder, stem, rng)
    os.remove(path + '.jpg')
    return stem, 'image file missing'
  if case == 'unreadable_image':
    fixtures.write_300wlp_sample(folder, stem, rng)
    open(path + '.jpg', 'wb').write(b'\xff\xd8 this is not a jpeg')
    return stem, 'cannot decode image'
  if case in ('grayscale', 'rgba', 'sixteen_bit'):
    fixtures.write_300wlp_sample(folder, stem, rng)
    os.remove(path + '.jpg')
    arr = {'grayscale': np.zeros((450, 450), np.uint8),
           'rgba': np.zeros((450, 450, 4), np.uint8),
           'sixteen_bit': np.zeros((450, 450), np.uint16)}[case]
    Image.fromarray(arr).save(path + '.png')
    return stem, {'grayscale': 'grayscale image', 'rgba': 'alpha channel',
                  'sixteen_bit': '16-bit'}[case]
  if case == 'nan_pose':
    fixtures.write_300wlp_sample(folder, stem, rng, Pose_Para=np.full((1, 7), np.nan,
                                                                       np.float32))
    return stem, "field 'Pose_Para' contains NaN"
  if case == 'bad_scale':
    fixtures.write_300wlp_sample(folder, stem, rng, Pose_Para=np.array(
        [[0, 0, 0, 200, 200, 0, -1.0]], np.float32))
    return stem, 'scale -1.0 is not positive'
  if case == 'wrong_shape_para':
    fixtures.write_300wlp_sample(folder, stem, rng, Shape_Para=np.zeros((199, 1)))
    return stem, 'Shape_Para has 199 values, the BFM has 16 components'
  raise ValueError(case)


BAD_CASES = ['truncated_mat', 'missing_field', 'missing_image', 'unreadable_image', 'grayscale',
             'rgba', 'sixteen_bit', 'nan_pose', 'bad_scale', 'wrong_shape_para']


@pytest.mark.parametrize('case', BAD_CASES)
def test_each_bad_sample_is_reported_and_skipped(manual_300wlp, tmp_path, capsys, case):
  stem, message = corrupt(manual_300wlp, case)
  builder = build_300wlp(manual_300wlp, tmp_path / 'data')
  out = capsys.readouterr().out
  line = next(l for l in out.splitlines() if stem in l)
  assert 'skipped' in line and message in line, line
  assert '3 of 4 samples kept, 1 skipped' in out
  image_problem = case in ('missing_image', 'unreadable_image', 'grayscale', 'rgba',
                           'sixteen_bit')
  bad_file = os.path.basename(builder.report.skipped[0][0])
  assert bad_file == stem + ('.png' if case in ('grayscale', 'rgba', 'sixteen_bit') else
                             '.jpg' if image_problem else '.mat')
  names = sorted(e['file_name'].decode() for e in read_all(builder, 'train'))
  assert names == ['AFW/AFW_1_0', 'AFW/AFW_1_1', 'HELEN_Flip/HELEN_2_0']  # the good ones


def test_a_bad_sample_met_in_a_worker_process_is_reported_and_skipped(manual_300wlp, tmp_path,
                                                                     capsys):
  """Worker processes hand a bad sample's SampleError back to the build (pickled): it must
  arrive whole, or the build dies instead of skipping the sample."""
  import pickle
  e = pickle.loads(pickle.dumps(readers.SampleError('a/b.mat', 'no pt3d_68')))
  assert (e.path, e.reason, str(e)) == ('a/b.mat', 'no pt3d_68', 'a/b.mat: no pt3d_68')
  stem, message = corrupt(manual_300wlp, 'missing_field')
  build_300wlp(manual_300wlp, tmp_path / 'data', num_workers=2)
  out = capsys.readouterr().out
  assert message in next(l for l in out.splitlines() if stem in l)
  assert '3 of 4 samples kept, 1 skipped' in out


def test_strict_build_stops_with_the_message(manual_300wlp, tmp_path):
  stem, message = corrupt(manual_300wlp, 'nan_pose')
  with pytest.raises(readers.SampleError, match=f'{stem}.mat: .*NaN.*strict build: stopping'):
    build_300wlp(manual_300wlp, tmp_path / 'data', strict=True)


def test_missing_manual_files_say_what_to_download(tmp_path, capsys):
  (tmp_path / 'manual').mkdir()
  code = build_lib.main(['prnet_300wlp', f'--manual_dir={tmp_path / "manual"}',
                         f'--data_dir={tmp_path / "data"}'])
  assert code == 1
  err = capsys.readouterr().err
  assert '300W_LP' in err and 'BFM.mat' in err and 'python -m datasets.build' in err


def test_aflw2000_real_samples_load_with_yaw_buckets(tmp_path):
  src = fixtures_shared_aflw()
  manual = tmp_path / 'manual'
  shutil.copytree(src, manual / 'AFLW2000')
  builder = build_lib.build('aflw2000_3d', data_dir=str(tmp_path / 'data'),
                            manual_dir=str(manual), num_workers=0)
  examples = read_all(builder, 'test')
  assert len(examples) == 6
  for ex in examples:
    mat = sio.loadmat(os.path.join(src, ex['file_name'].decode() + '.mat'))
    yaw = np.rad2deg(abs(mat['Pose_Para'][0, 1]))
    assert ex['yaw_bucket'] == (0 if yaw <= 30 else 1 if yaw <= 60 else 2)
    assert ex['position_map'] == b''  # no BFM given
    # landmarks: the crop of pt3d_68 (x, y) lies inside the 256 crop, centred
    lm = ex['landmarks_3d']
    assert np.all((lm[:, :2] > 0) & (lm[:, :2] < 256)) and lm[:, 2].min() == 0
    t = ex['crop_transform']
    np.testing.assert_allclose(lm[:, :2], mat['pt3d_68'][:2].T @ t[:2, :2].T + t[:2, 2],
                               rtol=1e-5, atol=1e-3)
  assert sorted(e['yaw_bucket'] for e in examples) == [0, 0, 0, 0, 1, 1]


def test_aflw2000_sample_with_a_wrapped_yaw_is_kept(tmp_path):
  """Two AFLW2000-3D fits have a yaw outside +-180 deg (e.g. -351.2): the sample is kept, its
  angles are wrapped into (-180, 180] (the same rotation: the same crop and landmarks), and it
  counts in the (60, 90] bucket as the field's evaluation code counts it."""
  src = fixtures_shared_aflw()
  manual = tmp_path / 'manual' / 'AFLW2000'
  manual.mkdir(parents=True)
  for stem, yaw_deg in (('image00050', -351.2), ('image00430', 8.8)):
    shutil.copy(os.path.join(src, 'image00050.jpg'), manual / f'{stem}.jpg')
    mat = sio.loadmat(os.path.join(src, 'image00050.mat'))
    mat['Pose_Para'][0, 1] = np.deg2rad(yaw_deg)
    sio.savemat(str(manual / f'{stem}.mat'), {k: v for k, v in mat.items()
                                             if not k.startswith('__')})
  builder = build_lib.build('aflw2000_3d', data_dir=str(tmp_path / 'data'),
                            manual_dir=str(tmp_path / 'manual'), num_workers=0, strict=True)
  examples = {ex['file_name'].decode(): ex for ex in read_all(builder, 'test')}
  assert sorted(examples) == ['image00050', 'image00430']
  wrapped, plain = examples['image00050'], examples['image00430']
  assert np.rad2deg(wrapped['pose'][1]) == pytest.approx(8.8, abs=1e-4)
  np.testing.assert_allclose(wrapped['pose'], plain['pose'], atol=1e-6)
  np.testing.assert_allclose(wrapped['landmarks_3d'], plain['landmarks_3d'])
  assert (wrapped['yaw_bucket'], plain['yaw_bucket']) == (2, 0)
  assert np.all(np.abs(readers.wrap_angles(np.deg2rad([-351.2, 180, -180, 540, 10]))
                       - np.deg2rad([8.8, 180, 180, 180, 10])) < 1e-9)


def fixtures_shared_aflw():
  from conftest import shared_path
  return shared_path('aflw2000-samples')


def test_aflw2000_with_bfm_stores_dense_maps(tmp_path):
  manual = tmp_path / 'manual'
  fixtures.write_bfm_fixture(str(manual / 'BFM'))
  rng = np.random.RandomState(3)
  fields = fixtures.write_300wlp_sample(str(manual / 'AFLW2000'), 'image00001', rng)
  pt3d = np.concatenate([rng.uniform(150, 300, (2, 68)), rng.uniform(-50, 50, (1, 68))])
  sio.savemat(str(manual / 'AFLW2000' / 'image00001.mat'), {**fields, 'pt3d_68': pt3d})
  builder = build_lib.build('aflw2000_3d', data_dir=str(tmp_path / 'data'),
                            manual_dir=str(manual), num_workers=0)
  (ex,) = read_all(builder, 'test')
  pos = posmap_codec.decode(ex['position_map'])
  assert pos.shape == (256, 256, 3) and np.any(pos != 0)
