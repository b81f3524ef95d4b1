"""face3d's generate.m without MATLAB: field-by-field against a reference written from the
script, on procedural and on the real 3DDFA / 3DMMasSTN metadata; the builders' folder loader."""

import os
import shutil

import fixtures
import numpy as np
import pytest
from conftest import shared_path
from scipy import io as sio

from prnet_jax.faces import bfm_generate
from prnet_jax.faces import face_model as fm

MODEL_ORDER = ['shapeMU', 'shapePC', 'shapeEV', 'texMU', 'texPC', 'texEV', 'tri', 'kpt_ind',
               'expMU', 'expPC', 'expEV', 'tri_mouth']


def face3d_reference(arrays):
  """generate.m read statement by statement, written independently of the port: per-vertex
  loops for the trim and the repair, MATLAB's 1-based indices spelled out."""
  raw = arrays['raw/01_MorphableModel.mat']
  info = arrays['3ddfa/model_info.mat']
  exp = arrays['3ddfa/Model_Expression.mat']
  trim = [int(t) for t in info['trimIndex'].reshape(-1)]

  def trim_rows(a):  # a(trimIndex_f, :) with trimIndex_f = [3t-2; 3t-1; 3t] per vertex
    return np.concatenate([a[3 * t - 3:3 * t] for t in trim])

  tri_mouth = arrays['3ddfa/Model_tri_mouth.mat']['tri_mouth']
  added = np.array([[6420, 6542, 6664], [6420, 6294, 6167], [6167, 6297, 6420],
                    [6167, 6297, 6296], [6167, 6296, 6295], [6167, 6295, 6039],
                    [6168, 6295, 6039]]).T
  # setdiff(1:114, [10032 10155 10280]) keeps every column
  tm_inner = np.concatenate([tri_mouth, added], axis=1)
  model = {'shapeMU': trim_rows(raw['shapeMU']), 'shapePC': trim_rows(raw['shapePC']),
           'shapeEV': raw['shapeEV'], 'texMU': trim_rows(raw['texMU']),
           'texPC': trim_rows(raw['texPC']), 'texEV': raw['texEV'], 'tri': info['tri'],
           'kpt_ind': info['keypoints'], 'expMU': exp['mu_exp'], 'expPC': exp['w_exp'],
           'expEV': exp['sigma_exp'], 'tri_mouth': tm_inner}
  uv_all = arrays['stn/BFM_UV.mat']['UV']
  uv = np.array([uv_all[t - 1] for t in trim])
  uv[10032 - 1] = (uv[10033 - 1] + uv[10158 - 1]) / 2
  uv[10155 - 1] = (uv[10534 - 1] + uv[10157 - 1] + uv[10661 - 1]) / 3
  uv[10280 - 1] = (uv[10916 - 1] + uv[10286 - 1]) / 2
  segbin = info['segbin']
  model_info = {'kpt_ind': info['keypoints'], 'trimIndex': info['trimIndex'],
                'symlist': info['symlist'], 'symlist_tri': info['symlist_tri'],
                'segbin': np.array([segbin[t - 1] for t in trim]).T,
                'segbin_tri': info['segbin_tri'].T, 'tri_mouth': tm_inner}
  for name in ('Model_face_contour_trimed', 'Modelplus_nose_hole', 'Modelplus_parallel'):
    model_info.update(arrays[f'3ddfa/{name}.mat'])
  model_info['uv_coords'] = uv
  return model, model_info, uv


def assert_same(a, b, what):
  a, b = np.asarray(a), np.asarray(b)
  if a.dtype == object:
    assert a.shape == b.shape, what
    for x, y in zip(a.reshape(-1), b.reshape(-1)):
      assert_same(x, y, what)
    return
  assert a.shape == b.shape, f'{what}: {a.shape} vs {b.shape}'
  np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=0, atol=1e-12,
                             err_msg=what)


def load_struct(path, name):
  s = sio.loadmat(path)[name][0, 0]
  return {k: s[k] for k in s.dtype.names}


def test_generate_matches_face3d_field_by_field(tmp_path, capsys):
  arrays = fixtures.write_raw_bfm_fixture(str(tmp_path / 'BFM'))
  assert bfm_generate.main([str(tmp_path / 'BFM'), str(tmp_path / 'Out')]) == 0
  assert 'wrote' in capsys.readouterr().out
  ref_model, ref_info, ref_uv = face3d_reference(arrays)
  model = load_struct(tmp_path / 'Out' / 'BFM.mat', 'model')
  assert list(model) == MODEL_ORDER
  for k in MODEL_ORDER:
    assert_same(model[k], ref_model[k], f'BFM.mat model.{k}')
  # MATLAB classes kept: the raw single-precision mean stays single
  assert model['shapeMU'].dtype == np.float32 and model['texMU'].dtype == np.float32
  info = load_struct(tmp_path / 'Out' / 'BFM_info.mat', 'model_info')
  assert set(info) == set(ref_info)
  for k in ref_info:
    assert_same(info[k], ref_info[k], f'BFM_info.mat model_info.{k}')
  assert info['segbin'].dtype == np.uint8
  uv = sio.loadmat(tmp_path / 'Out' / 'BFM_UV.mat')['UV']
  assert_same(uv, ref_uv, 'BFM_UV.mat UV')
  assert uv.min() >= 0 and uv.max() <= 1  # no junk row and the three repaired vertices
  assert os.path.isfile(tmp_path / 'Out' / 'pncc_code.mat')

  # the builders' loader: the raw folder converted in memory == the written BFM.mat
  from_raw = fm.load_bfm_folder(str(tmp_path / 'BFM'))
  written = fm.load_bfm_folder(str(tmp_path / 'Out'))
  for field in ('mean', 'shape_basis', 'exp_basis', 'triangles', 'uv', 'landmarks', 'albedo'):
    np.testing.assert_array_equal(getattr(from_raw, field), getattr(written, field), field)
  # the procedural face comes back: mean = shapeMU + expMU at the kept vertices
  src = fixtures.procedural_face_model(105, 106)
  np.testing.assert_array_equal(from_raw.landmarks, src.landmarks)
  assert from_raw.num_vertices == src.num_vertices


def test_real_3ddfa_metadata_gives_the_released_uv_file(tmp_path):
  """On the real model_info.mat (trimIndex, tri, keypoints, segbin) and the released UVs
  placed back into 53,490 rows with the three bad vertices spoilt, the port's BFM_UV.mat is
  face3d's released one exactly, and BFM.mat holds the real topology."""
  info_path = shared_path('bfm-metadata', 'model_info.mat')
  uv_path = shared_path('bfm-metadata', 'BFM_UV.mat')
  arrays = fixtures.write_raw_bfm_fixture(str(tmp_path / 'BFM'), n_shape=2, n_exp=2,
                                          real_info=info_path, real_uv=uv_path)
  model, model_info, uv = bfm_generate.generate(str(tmp_path / 'BFM'))
  np.testing.assert_array_equal(uv, sio.loadmat(uv_path)['UV'])
  ref_model, ref_info, _ = face3d_reference(arrays)
  for k in MODEL_ORDER:
    assert_same(model[k], ref_model[k], f'model.{k}')
  assert_same(model_info['segbin'], ref_info['segbin'], 'model_info.segbin')
  assert model['tri'].shape == (3, 105840) and model['tri_mouth'].shape == (3, 121)
  loaded = fm.bfm_from_fields(model, uv, 'BFM.mat', 'BFM_UV.mat')
  assert loaded.num_vertices == 53215
  real_kpt = sio.loadmat(info_path)['keypoints'].reshape(-1).astype(int) - 1
  np.testing.assert_array_equal(loaded.landmarks, real_kpt)


@pytest.mark.parametrize('case', ['missing_file', 'missing_field', 'v73', 'short_uv',
                                  'overwrite'])
def test_bad_inputs_name_the_file_and_the_problem(tmp_path, capsys, case):
  src = tmp_path / 'BFM'
  fixtures.write_raw_bfm_fixture(str(src), nu=105, nv=105, n_shape=2, n_exp=2)
  out = tmp_path / 'Out'
  if case == 'missing_file':
    os.remove(src / '3ddfa' / 'Model_Expression.mat')
    expect = ('Model_Expression.mat', 'file not found')
  elif case == 'missing_field':
    sio.savemat(src / '3ddfa' / 'Model_Expression.mat', {'mu_exp': np.zeros((3, 1))})
    expect = ('Model_Expression.mat', "['w_exp', 'sigma_exp']")
  elif case == 'v73':
    with open(src / 'raw' / '01_MorphableModel.mat', 'wb') as f:
      f.write(b'MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .' + bytes(200))
    expect = ('01_MorphableModel.mat', 'v7.3')
  elif case == 'short_uv':
    sio.savemat(src / 'stn' / 'BFM_UV.mat', {'UV': np.zeros((100, 2))})
    expect = ('BFM_UV.mat', 'UV has 100 rows')
  else:
    shutil.copy(src / 'stn' / 'BFM_UV.mat', src / 'BFM_UV.mat')
    os.remove(src / 'stn' / 'BFM_UV.mat')
    out = src
    expect = ('BFM_UV.mat', 'is an input')
  assert bfm_generate.main([str(src), str(out)]) == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and all(e in err for e in expect), err
  assert not os.path.exists(tmp_path / 'Out' / 'BFM.mat')  # nothing half-written


def test_a_folder_with_neither_layout_is_named(tmp_path):
  (tmp_path / 'BFM').mkdir()
  with pytest.raises(fm.FaceModelError, match='neither BFM.mat'):
    fm.load_bfm_folder(str(tmp_path / 'BFM'))


def test_the_300wlp_builder_takes_the_raw_downloads_or_face3d_files(tmp_path):
  from datasets import prnet_300wlp
  manual = tmp_path / 'manual'
  fixtures.write_raw_bfm_fixture(str(manual / 'BFM'))
  assert bfm_generate.main([str(manual / 'BFM'), str(tmp_path / 'Out')]) == 0
  folder = manual / '300W_LP' / 'AFW'
  fixtures.write_300wlp_sample(str(folder), 'AFW_1_0', np.random.default_rng(0))
  item = (str(folder / 'AFW_1_0.jpg'), str(folder / 'AFW_1_0.mat'), 'AFW/AFW_1_0')
  examples = []
  for bfm_dir in (manual / 'BFM', tmp_path / 'Out'):
    prnet_300wlp._init_bfm(str(bfm_dir))
    result = prnet_300wlp.process_sample(item)
    assert isinstance(result, tuple), result
    examples.append(result[1])
  assert examples[0].keys() == examples[1].keys()
  for k in examples[0]:
    assert np.array_equal(np.asarray(examples[0][k]), np.asarray(examples[1][k])), k

  class Manual:  # what _split_generators reads of TFDS's download manager
    manual_dir = str(manual)
  splits = prnet_300wlp.Prnet300wlp(data_dir=str(tmp_path / 'tfds'))._split_generators(Manual)
  assert list(splits) == ['train']
