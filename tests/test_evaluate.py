"""The evaluator end to end: padding, per-example equality, real AFLW2000-3D samples,
Florence, launch.py --mode=eval and several devices."""

import json
import os
import shutil

import jax
import numpy as np
from PIL import Image
import pytest
import scipy.io as sio

from prnet_jax.data import image_io, input_pipeline, readers
from prnet_jax.evaluation import alignment, evaluate, metrics
from prnet_jax.faces.catalog import uv_assets_for
from prnet_jax.nn import checkpoints
from prnet_jax.nn.model import ModelConfig, PRNet, init_variables

import configs.prnet as prnet_config
from datasets import build as build_lib
import fixtures
from fixtures import tiny_config


@pytest.fixture(scope='module')
def tiny(tiny_dataset, tmp_path_factory):
  """synthetic_faces/tiny and an (untrained) small-variant checkpoint."""
  root = tmp_path_factory.mktemp('eval')
  config = tiny_config(tiny_dataset)
  model_config = ModelConfig.from_mapping(dict(config.model))
  model = PRNet.from_config(model_config)
  variables = init_variables(model, jax.random.key(3))
  ckpt = str(root / 'run')  # a run's workdir, as users pass it (checkpoints in run/checkpoints)
  checkpoints.save_variables(os.path.join(ckpt, 'checkpoints'), variables, model_config,
                               step=7)
  return config, ckpt, variables, model


def test_global_batches_cover_every_index_once():
  seen = []
  for idx, real in alignment.global_batches(11, 4):
    assert len(idx) == 4
    seen += list(idx[:real])
  assert seen == list(range(11))


@pytest.mark.slow(reason='builds a dataset')
def test_per_example_results_equal_a_direct_computation(tiny):
  """16 test examples in batches of 6 (the last padded): every value equals model.apply and
  the metrics on that example alone."""
  config, _, variables, model = tiny
  source = input_pipeline.data_source(config.dataset, 'test', config.data_dir)
  assets = uv_assets_for(config.uv_assets, model.resolution)
  mesh = jax.make_mesh((1,), ('data',))
  opts = alignment.EvalOptions(batch_size=6)
  out = alignment.Evaluator(model, assets, mesh, opts).run(variables, source)
  n = len(source)
  assert n == 16 and all(len(v) == n for v in out.values())
  decode = input_pipeline.DecodeExample(model.resolution)
  for i in (0, 7, 15):
    ex = decode.map(source[i])
    pred = np.asarray(model.apply(variables, ex['image'][None] / 255.0, train=False))[0]
    np.testing.assert_allclose(out['landmarks'][i], assets.landmarks(pred), rtol=1e-4, atol=1e-4)
    ref = metrics.nme(assets.landmarks(pred)[None], ex['landmarks'][None], 2)[0]
    assert out['nme_2d'][i] == pytest.approx(float(ref), rel=1e-4)
    dense = metrics.dense_nme(pred[None], ex['position_map'][None], assets.face_mask,
                              ex['landmarks'][None], 3)[0]
    assert out['dense_3d'][i] == pytest.approx(float(dense), rel=1e-4)


@pytest.mark.slow(reason='builds a dataset')
def test_evaluate_writes_json_table_and_plots(tiny, tmp_path):
  config, ckpt, _, _ = tiny
  report = evaluate.evaluate(config, str(tmp_path), checkpoint=ckpt)
  base = tmp_path / 'eval' / 'synthetic_faces-tiny'
  saved = json.loads((base.parent / (base.name + '.json')).read_text())
  assert saved['step'] == 7 and saved['count'] == 16 and saved['options']['norm'] == 'box'
  assert set(saved['summary']) == {'nme_2d', 'nme_3d', 'dense_2d', 'dense_3d'}
  s = saved['summary']['nme_2d']
  assert s['all'] == pytest.approx(np.mean(saved['per_example']['nme_2d']))
  assert s['bucket_mean'] == pytest.approx(np.nanmean([s['bucket0'], s['bucket1'],
                                                       s['bucket2']]), nan_ok=True) or \
      np.isnan(s['bucket_mean'])
  table = (base.parent / (base.name + '.md')).read_text()
  assert '| mean of the bucket means |' in table and '3.62' in table
  for png in ('_ced.png', '_examples.png'):
    with Image.open(str(base) + png) as im:
      assert im.size[0] > 100
  assert report['summary']['nme_2d']['all'] > 0.05  # an untrained network is far off


@pytest.mark.slow(reason='builds a dataset')
def test_oracle_on_synthetic_data_gives_zero_dense_error(tiny, tmp_path):
  config = tiny[0]
  report = evaluate.evaluate(config, str(tmp_path), oracle=True)
  for m in ('dense_2d', 'dense_3d'):
    assert report['summary'][m]['all'] == 0.0
  assert os.path.exists(tmp_path / 'eval' / 'synthetic_faces-tiny-oracle.json')


def build_real_aflw2000_samples(tmp_path) -> str:
  """Builds `aflw2000_3d` from the six shared real samples into tmp_path/data; returns their
  folder (skips the test when ../shared is absent)."""
  from conftest import shared_path
  src = shared_path('aflw2000-samples')
  manual = tmp_path / 'manual'
  shutil.copytree(src, manual / 'AFLW2000')
  build_lib.build('aflw2000_3d', data_dir=str(tmp_path / 'data'), manual_dir=str(manual),
                  num_workers=0)
  return src


@pytest.mark.slow(reason='full model over a built dataset')
def test_real_aflw2000_samples_end_to_end(tmp_path):
  """The six real AFLW2000-3D samples: buckets from Pose_Para, ground truth against itself
  gives NME 0, and the full PRNet runs over them (batch 4: the last batch padded)."""
  from conftest import shared_path
  src = build_real_aflw2000_samples(tmp_path)
  config = prnet_config.get_config('')
  config.data_dir = str(tmp_path / 'data')
  config.uv_assets = shared_path('prnet-official', 'uv-data')
  config.eval.dataset = 'aflw2000_3d'
  config.eval.batch_size = 4
  oracle = evaluate.evaluate(config, str(tmp_path / 'wd'), oracle=True)
  per = oracle['per_example']
  assert len(per['file_name']) == 6
  for name, bucket in zip(per['file_name'], per['yaw_bucket']):
    yaw = sio.loadmat(os.path.join(src, name + '.mat'))['Pose_Para'][0, 1]
    assert bucket == readers.yaw_bucket(yaw), name
  assert max(per['nme_2d']) == 0.0 and max(per['nme_3d']) == 0.0
  assert 'dense_2d' not in oracle['summary']  # no BFM in the build
  model_config = ModelConfig.from_mapping(dict(config.model))
  model = PRNet.from_config(model_config)
  ckpt = str(tmp_path / 'ckpt')
  checkpoints.save_variables(ckpt, init_variables(model, jax.random.key(0)), model_config)
  report = evaluate.evaluate(config, str(tmp_path / 'wd'), checkpoint=ckpt)
  assert len(report['per_example']['nme_2d']) == 6
  assert min(report['per_example']['nme_2d']) > 0.05
  table = (tmp_path / 'wd' / 'eval' / 'aflw2000_3d.md').read_text()
  assert '(4 images)' in table and '(2 images)' in table and 'shown for scale' not in table


@pytest.mark.slow(reason='builds and evaluates a dataset')
def test_florence_build_and_evaluate(tmp_path):
  """A scan folder with one good subject (the embedded face as a textured .obj) and one broken
  one: the build reports and skips the broken scan; evaluation writes the Florence report."""
  from prnet_jax.data import mesh_io
  from prnet_jax.faces.procedural_face import procedural_face_model
  m = procedural_face_model()
  root = tmp_path / 'manual' / 'Florence'
  good = root / 'subject_01' / 'Model' / 'frontal1' / 'obj'
  good.mkdir(parents=True)
  mesh_io.write_obj(str(good / 'scan.obj'), m.mean, m.triangles, colors=m.albedo)
  (root / 'subject_02').mkdir()
  (root / 'subject_02' / 'scan.obj').write_text('v 0 0 0\nf 1 2 3\n')
  builder = build_lib.build('florence/tiny', data_dir=str(tmp_path / 'data'),
                            manual_dir=str(tmp_path / 'manual'), num_workers=0)
  assert len(builder.report.skipped) == 1 and 'subject_02' in builder.report.skipped[0][0]
  source = input_pipeline.data_source('florence/tiny', 'test', str(tmp_path / 'data'))
  assert len(source) == 2
  ex = source[1]
  assert ex['gt_points'].shape[1] == 3 and 1000 < len(ex['gt_points']) <= 8000
  image = image_io.decode_record(ex['image'])
  assert image.shape == (256, 256, 3) and image.std() > 10  # a face, not a blank canvas
  config = prnet_config.get_config('small')
  config.uv_assets = 'procedural'  # the scan is the procedural face
  config.data_dir = str(tmp_path / 'data')
  config.eval.dataset = 'florence/tiny'
  config.eval.batch_size = 2
  model_config = ModelConfig.from_mapping(dict(config.model))
  model = PRNet.from_config(model_config)
  ckpt = str(tmp_path / 'ckpt')
  checkpoints.save_variables(ckpt, init_variables(model, jax.random.key(0)), model_config)
  report = evaluate.evaluate(config, str(tmp_path / 'wd'), checkpoint=ckpt)
  assert report['count'] == 2 and list(report['options']['florence']['yaws_deg']) == [0, 60]
  assert all(np.isfinite(report['per_example']['florence']))
  assert (tmp_path / 'wd' / 'eval' / 'florence-tiny_examples.png').exists()
  table = (tmp_path / 'wd' / 'eval' / 'florence-tiny.md').read_text()
  assert '3.7551*' in table and '| mean error (mm), all views |' in table


def run_launch(args, devices=1):
  return fixtures.run_launch('--config=configs/prnet.py:small', *args, devices=devices)


@pytest.mark.slow(reason='launch.py subprocesses')
def test_launch_eval_on_four_devices_equals_one_device(tiny, tmp_path):
  config, ckpt, _, _ = tiny
  common = ['--mode=eval', f'--checkpoint={ckpt}', '--config.dataset=synthetic_faces/tiny',
            '--config.uv_assets=procedural',
            f'--config.data_dir={config.data_dir}', '--config.eval.batch_size=8']
  out = {}
  for d in (1, 4):
    r = run_launch([f'--workdir={tmp_path / str(d)}', *common], devices=d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'mean of the bucket means' in r.stdout
    out[d] = json.loads((tmp_path / str(d) / 'eval' / 'synthetic_faces-tiny.json').read_text())
  np.testing.assert_allclose(out[4]['per_example']['nme_3d'], out[1]['per_example']['nme_3d'],
                             rtol=1e-5)
  # Without --checkpoint the run's own WORKDIR/checkpoints is used: absent here.
  r = run_launch([f'--workdir={tmp_path / "none"}', '--mode=eval', *common[2:]])
  assert r.returncode == 1 and 'checkpoint directory does not exist' in r.stderr
  assert 'Traceback' not in r.stderr


@pytest.mark.slow(reason='launch.py subprocess')
def test_evaluation_errors_name_the_problem(tiny, tmp_path):
  config = prnet_config.get_config('small')
  config.data_dir = str(tmp_path / 'empty')
  with pytest.raises(evaluate.EvaluationError,
                     match=r'not prepared[\s\S]*python -m datasets.build'):
    evaluate.evaluate(config, str(tmp_path), checkpoint='untrained')
  config.eval.dataset = 'florence'
  with pytest.raises(evaluate.EvaluationError, match='--oracle needs position-map'):
    evaluate.evaluate(config, str(tmp_path), oracle=True)
  # 4 devices cannot split a global batch of 6.
  config, ckpt, _, _ = tiny
  r = run_launch([f'--workdir={tmp_path / "wd"}', '--mode=eval', f'--checkpoint={ckpt}',
                  '--config.dataset=synthetic_faces/tiny', '--config.uv_assets=procedural',
                  f'--config.data_dir={config.data_dir}', '--config.eval.batch_size=6'], devices=4)
  assert r.returncode == 1 and 'not divisible by the 4 devices' in r.stderr
  assert 'Traceback' not in r.stderr


@pytest.mark.slow(reason='builds a dataset and evaluates the bundled model twice')
def test_the_papers_aflw2000_path_scores_real_files_like_folder_eval(tmp_path):
  """`datasets.build aflw2000_3d` + `--mode=eval` (records: the official landmark crop at 256
  px as JPEG, resized to the model's 64 px input) and `folder_eval` (the same crop straight
  from the photo, low-passed as the model's run config says) give the bundled model the same
  per-file 2D NME on the six real samples, within what the two resamplings change (measured:
  up to 1.2 points on a file, 0.02 on average). A crop, landmark-order or normaliser mismatch
  would differ by far more on every file."""
  from conftest import shared_path
  from prnet_jax.serving import folder_eval
  from prnet_jax.serving.inference import Predictor
  src = build_real_aflw2000_samples(tmp_path)
  config = prnet_config.get_config('ict')
  config.data_dir = str(tmp_path / 'data')
  config.eval.dataset, config.eval.batch_size = 'aflw2000_3d', 2
  report = evaluate.evaluate(config, str(tmp_path / 'wd'), checkpoint='pretrained')
  paper = dict(zip(report['per_example']['file_name'], report['per_example']['nme_2d']))
  predictor = Predictor.from_pretrained()
  # One plain pass, as the evaluator runs the network: no test-time passes, no correction.
  predictor.upright = predictor.flip = False
  predictor.landmark_correction, predictor.crop_scale = None, 1.0  # the official crop
  result = folder_eval.evaluate_folder(predictor, src, baselines=False)
  folder = {r['file']: r['model_2d'] for r in result['files']}
  assert sorted(paper) == sorted(folder) and len(paper) == 6
  diffs = np.array([paper[k] - folder[k] for k in sorted(paper)])
  assert np.abs(diffs).max() < 0.02, (paper, folder)     # two points of NME per file at most
  assert abs(diffs.mean()) < 0.005, (paper, folder)      # and no bias between the two paths
