"""The linear landmark correction (prnet_jax.serving.landmark_correction) and the one shipped
for the bundled model."""

import os

import numpy as np
import pytest

from prnet_jax.nn import checkpoints
from prnet_jax.serving import landmark_correction as lc


def faces(n, seed=0):
  """(n, 68, 3) landmark sets of varied position, size and shape."""
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(68, 3))
  p = base + 0.2 * rng.normal(size=(n, 68, 3))
  return p * rng.uniform(50, 200, (n, 1, 1)) + rng.uniform(0, 500, (n, 1, 3))


def test_solve_recovers_a_linear_correction_and_it_moves_only_x_and_y():
  rng = np.random.default_rng(1)
  w = 0.05 * rng.normal(size=(lc.FEATURES, 136))
  pred = faces(600)
  gt = lc.correct(w, pred)
  assert np.abs(gt[..., :2] - pred[..., :2]).max() > 1  # a real correction
  np.testing.assert_array_equal(gt[..., 2], pred[..., 2])
  # W itself is not unique (the centred z features sum to zero); the corrected points are.
  fitted = lc.solve(pred, gt, 1e-9)
  assert lc.nme_2d(lc.correct(fitted, pred), gt).max() < 1e-6
  new = faces(20, seed=9)
  np.testing.assert_allclose(lc.correct(fitted, new), lc.correct(w, new), atol=1e-4)


def test_the_correction_follows_the_face_when_it_moves_or_scales():
  w = 0.05 * np.random.default_rng(2).normal(size=(lc.FEATURES, 136))
  p = faces(5)
  moved = p * 1.7 + np.array([30.0, -12.0, 4.0])
  np.testing.assert_allclose(lc.correct(w, moved)[..., :2],
                             lc.correct(w, p)[..., :2] * 1.7 + [30.0, -12.0], rtol=1e-9, atol=1e-7)
  np.testing.assert_allclose(lc.correct(w, p[0]), lc.correct(w, p)[0])  # one face alone


def test_cross_validation_never_uses_a_faces_own_truth():
  pred = faces(60, 3)
  gt = pred + np.random.default_rng(4).normal(size=pred.shape)
  a = lc.cross_validated(pred, gt, 0.1, folds=5)
  gt2 = gt.copy()
  gt2[7] += 100.0  # face 7's truth changes: its own held-out correction must not
  b = lc.cross_validated(pred, gt2, 0.1, folds=5)
  np.testing.assert_array_equal(a[7], b[7])
  assert np.abs(a - b).max() > 0  # the others' corrections saw it


def test_fit_picks_the_best_strength_and_saves_and_loads(tmp_path):
  rng = np.random.default_rng(5)
  w = 0.05 * rng.normal(size=(lc.FEATURES, 136))
  pred = faces(300, 6)
  gt = lc.correct(w, pred)
  gt[..., :2] += rng.normal(0, 0.5, gt[..., :2].shape)
  angles = rng.uniform(-90, 90, (300, 3))
  c = lc.fit(pred, gt, 'abc', folds=5, lambdas=(1e-3, 1e3), angles=angles)
  assert c.info['lambda'] == 1e-3
  assert c.info['nme_cross_validated'] < 0.5 * c.info['nme_before']
  assert len(c.info['nme_cross_validated_by_yaw']) == 3
  c.save(str(tmp_path / 'c.npz'))
  back = lc.LandmarkCorrection.load(str(tmp_path / 'c.npz'))
  assert back.fingerprint == 'abc' and back.info == c.info
  np.testing.assert_allclose(back(pred[:3]), c(pred[:3]), atol=1e-3)
  (tmp_path / 'bad.npz').write_bytes(b'not a file')
  with pytest.raises(ValueError, match='bad.npz: not a landmark correction file'):
    lc.LandmarkCorrection.load(str(tmp_path / 'bad.npz'))
  with pytest.raises(ValueError, match='too few'):
    lc.fit(pred[:10], gt[:10], 'abc', folds=10)


def test_the_shipped_correction_belongs_to_the_bundled_model(pretrained_predictor):
  shipped = lc.LandmarkCorrection.load(lc.SHIPPED)
  variables, _, _ = checkpoints.load_variables(checkpoints.PRETRAINED)
  assert shipped.fingerprint == lc.model_fingerprint(variables)
  assert pretrained_predictor.landmark_correction is not None
  assert pretrained_predictor.crop_scale == shipped.crop_scale  # the framing it was fitted on
  info = shipped.info
  assert info['faces'] == 994 and info['nme_cross_validated'] < info['nme_before']
  # Another model's variables have another fingerprint: a correction is never applied to it.
  variables['params']['conv0']['conv']['kernel'] = variables['params']['conv0']['conv'][
      'kernel'] * 1.001
  assert shipped.fingerprint != lc.model_fingerprint(variables)


def test_the_fitting_command_on_real_faces(tmp_path, capsys):
  """The command on 40 real faces of the development half: a correction for the bundled model
  that beats the model alone when cross-validated."""
  from conftest import shared_path
  from prnet_jax.data import readers
  from prnet_jax.serving import fit_landmark_correction
  folder = tmp_path / 'faces'
  folder.mkdir()
  for image, mat in readers.find_pairs(shared_path('aflw2000-dev'))[::25]:
    for path in (image, mat):
      (folder / os.path.basename(path)).symlink_to(os.path.abspath(path))
  (folder / 'broken.jpg').write_bytes(b'x')
  (folder / 'broken.mat').write_bytes(b'not a mat file')
  out = tmp_path / 'c.npz'
  assert fit_landmark_correction.main([f'--input={folder}', f'--output={out}', '--folds=4',
                                       '--crop_scales=1.0,0.85']) == 0
  printed = capsys.readouterr().out
  assert 'skipped' in printed and 'broken' in printed
  assert '| official crops, no correction |' in printed and '(cross-validated)' in printed
  c = lc.LandmarkCorrection.load(str(out))
  variables, _, _ = checkpoints.load_variables(checkpoints.PRETRAINED)
  assert c.fingerprint == lc.model_fingerprint(variables) and c.info['faces'] == 40
  assert c.info['nme_cross_validated'] < c.info['nme_before']
  by_scale = c.info['cv_nme_by_crop_scale']
  assert set(by_scale) == {'1.0', '0.85'} and by_scale[str(c.crop_scale)] == min(by_scale.values())
  assert fit_landmark_correction.main([f'--input={tmp_path / "none"}', f'--output={out}']) == 2


def test_the_crop_scale_frames_landmark_and_box_crops_but_not_whole_crops(pretrained_predictor):
  import copy
  from prnet_jax.geometry import transforms
  p = copy.copy(pretrained_predictor)
  lms = faces(1)[0]
  image = np.zeros((700, 700, 3), np.uint8)
  p.crop_scale = 1.0
  (official,), _ = p.crops_for(image, landmarks=lms[None, :, :2])
  (boxed,), _ = p.crops_for(image, boxes=[(100, 100, 300, 340)])
  (whole,), _ = p.crops_for(image, boxes=[(0, 0, 699, 699)], box_convention='crop')
  p.crop_scale = 0.8
  (small,), _ = p.crops_for(image, landmarks=lms[None, :, :2])
  assert small.size == pytest.approx(0.8 * official.size)
  assert small.size == pytest.approx(0.8 * transforms.landmark_crop(lms).size)
  np.testing.assert_allclose(small.center, official.center)
  assert p.crops_for(image, boxes=[(100, 100, 300, 340)])[0][0].size == pytest.approx(
      0.8 * boxed.size)
  assert p.crops_for(image, boxes=[(0, 0, 699, 699)], box_convention='crop')[0][0].size == (
      whole.size)
