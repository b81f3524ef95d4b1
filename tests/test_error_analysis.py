"""The error analysis of 68-point landmarks: per-face NME, buckets, groups, systematic offsets."""

import numpy as np
import pytest

from prnet_jax.evaluation import error_analysis as ea


def faces(n=40, seed=0):
  rng = np.random.default_rng(seed)
  gt = rng.uniform(20, 200, (n, 68, 2))
  pred = gt + rng.normal(0, 3, gt.shape)
  angles = rng.uniform(-90, 90, (n, 3))
  return pred, gt, angles


def test_point_errors_and_offsets_against_a_loop_over_faces():
  pred, gt, _ = faces()
  errors, off = ea.point_errors(pred, gt), ea.offsets(pred, gt)
  for i in range(len(gt)):
    box = np.sqrt(np.ptp(gt[i, :, 0]) * np.ptp(gt[i, :, 1]))
    for j in range(68):
      assert errors[i, j] == pytest.approx(np.hypot(*(pred[i, j] - gt[i, j])) / box, rel=1e-6)  # box in float32
      np.testing.assert_allclose(off[i, j], (pred[i, j] - gt[i, j]) / box, rtol=1e-6)


def test_buckets_include_their_upper_edge_and_use_the_absolute_angle():
  got = ea.angle_bucket([0, 30, -30, 30.001, 60, -60.5, 90, 200], (30, 60))
  np.testing.assert_array_equal(got, [0, 0, 0, 1, 1, 2, 2, 2])
  assert [ea.bucket_label((30, 60), b) for b in range(3)] == ['[0, 30]', '(30, 60]', '> 60']


def test_analysis_means_groups_offsets_and_worst_faces():
  pred, gt, angles = faces()
  # A systematic shift of the jaw by 5% of each face's box, on top of the noise.
  box = np.sqrt(np.ptp(gt[..., 0], 1) * np.ptp(gt[..., 1], 1))
  pred[:, :17, 1] += 0.05 * box[:, None]
  names = [f'f{i}' for i in range(len(gt))]
  a = ea.analyse(pred, gt, angles, names, worst=5)
  per_face = ea.point_errors(pred, gt).mean(1)
  assert a['mean'] == pytest.approx(per_face.mean()) and a['count'] == len(gt)
  for axis, k in (('pitch', 0), ('yaw', 1), ('roll', 2)):
    b = ea.angle_bucket(angles[:, k], ea.EDGES[axis])
    for row, bucket in zip(a['by_angle'][axis], range(3)):
      assert row['count'] == np.sum(b == bucket)
      if row['count']:
        assert row['nme'] == pytest.approx(per_face[b == bucket].mean())
  assert sum(r['count'] for r in a['by_angle']['yaw']) == len(gt)
  # The jaw's offset is found (dy ~ +5%); the other groups' offsets are noise (~0).
  off = np.asarray(a['offsets'])
  np.testing.assert_allclose(off[:17, 1], 0.05, atol=0.01)
  assert np.abs(off[17:]).max() < 0.01
  assert a['by_group']['jaw'] > max(v for g, v in a['by_group'].items() if g != 'jaw')
  # The worst faces, worst first.
  assert a['worst'] == list(np.argsort(-per_face)[:5])
  assert [a['per_file'][i]['file'] for i in a['worst']] == [names[i] for i in a['worst']]
  text = ea.markdown(a, 'test')
  assert '| jaw |' in text and f'{100 * a["mean"]:.2f}' in text


def test_bad_shapes_are_named():
  pred, gt, angles = faces(3)
  with pytest.raises(ValueError, match='68'):
    ea.point_errors(pred[:, :60], gt[:, :60])
  with pytest.raises(ValueError, match='names'):
    ea.analyse(pred, gt, angles, ['a'])
