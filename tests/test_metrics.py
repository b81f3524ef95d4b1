"""Metrics against float64 NumPy references and known values."""

import jax
import numpy as np
import pytest

from prnet_jax.evaluation import metrics


def ref_nme(pred, gt, dims, norm, z_align):
  pred, gt = np.float64(pred), np.float64(gt)
  if dims == 3:
    for p in (pred, gt):
      if z_align == 'mean':
        p[..., 2] -= p[..., 2].mean(-1, keepdims=True)
      elif z_align == 'min':
        p[..., 2] -= p[..., 2].min(-1, keepdims=True)
  out = []
  for p, g in zip(pred, gt):
    w, h = g[:, 0].max() - g[:, 0].min(), g[:, 1].max() - g[:, 1].min()
    d = np.sqrt(w * h) if norm == 'box' else np.hypot(w, h)
    out.append(np.mean([np.sqrt(((p[i, :dims] - g[i, :dims]) ** 2).sum())
                        for i in range(len(g))]) / d)
  return np.array(out)


def landmarks(rng, b=5):
  gt = rng.uniform(20, 230, (b, 68, 3)).astype(np.float32)
  pred = (gt + rng.normal(0, 4, gt.shape) + [0, 0, 30]).astype(np.float32)
  return pred, gt


@pytest.mark.parametrize('dims', [2, 3])
@pytest.mark.parametrize('norm', ['box', 'diag'])
@pytest.mark.parametrize('z_align', ['mean', 'min', 'none'])
def test_landmark_nme_matches_float64_reference(dims, norm, z_align):
  pred, gt = landmarks(np.random.default_rng(0))
  got = jax.jit(metrics.nme, static_argnums=(2, 3, 4))(pred, gt, dims, norm, z_align)
  assert got.dtype == np.float32 and got.shape == (5,)
  np.testing.assert_allclose(got, ref_nme(pred, gt, dims, norm, z_align), rtol=2e-6)


def test_z_alignment_removes_a_depth_offset_and_nothing_else():
  pred, gt = landmarks(np.random.default_rng(1))
  shifted = pred.copy()
  shifted[..., 2] += 1000.0
  for how in ('mean', 'min'):
    np.testing.assert_allclose(metrics.nme(shifted, gt, 3, z_align=how),
                               metrics.nme(pred, gt, 3, z_align=how), rtol=1e-4)
  assert np.all(metrics.nme(shifted, gt, 3, z_align='none') > 3)
  # 2D ignores z entirely; NME is invariant to scaling both sets.
  np.testing.assert_allclose(metrics.nme(shifted, gt, 2), metrics.nme(pred, gt, 2))
  np.testing.assert_allclose(metrics.nme(pred * 3, gt * 3, 3), metrics.nme(pred, gt, 3),
                             rtol=1e-5)


@pytest.mark.parametrize('dims,z_align,norm', [(2, 'mean', 'box'), (3, 'mean', 'box'),
                                               (3, 'min', 'box'), (2, 'mean', 'face_box'),
                                               (3, 'mean', 'face_box')])
def test_dense_nme_matches_float64_reference(dims, z_align, norm):
  rng = np.random.default_rng(2)
  r = 16
  gt_map = rng.uniform(0, 64, (3, r, r, 3)).astype(np.float32)
  pred_map = (gt_map + rng.normal(0, 2, gt_map.shape) + [0, 0, 9]).astype(np.float32)
  mask = (rng.random((r, r)) < 0.4).astype(np.float32)
  gt_lms = rng.uniform(5, 60, (3, 68, 3)).astype(np.float32)
  got = metrics.dense_nme(pred_map, gt_map, mask, gt_lms, dims, norm, z_align)
  sel = mask.reshape(-1) > 0
  ref = []
  for b in range(3):
    p = np.float64(pred_map[b].reshape(-1, 3)[sel])
    g = np.float64(gt_map[b].reshape(-1, 3)[sel])
    # 'box': the 68 landmarks' box; 'face_box': the box of the ground-truth face pixels.
    box = np.float64(gt_lms[b]) if norm == 'box' else g.copy()
    if dims == 3:
      for x in (p, g):
        x[:, 2] -= x[:, 2].mean() if z_align == 'mean' else x[:, 2].min()
    w, h = np.ptp(box[:, 0]), np.ptp(box[:, 1])
    ref.append(np.linalg.norm(p[:, :dims] - g[:, :dims], axis=1).mean() / np.sqrt(w * h))
  np.testing.assert_allclose(got, ref, rtol=2e-5)
  # Pixels outside the mask do not count (not in the error, not in the face box).
  noisy = pred_map.copy()
  noisy[:, mask == 0] += 1e4
  far_gt = gt_map.copy()
  far_gt[:, mask == 0] = 1e4
  np.testing.assert_allclose(metrics.dense_nme(noisy, far_gt, mask, gt_lms, dims, norm, z_align),
                             got, rtol=1e-5)
  with pytest.raises(ValueError, match='unknown dense NME normaliser'):
    metrics.dense_nme(pred_map, gt_map, mask, gt_lms, dims, 'eyes', z_align)


def test_yaw_buckets_follow_the_protocol_boundaries():
  deg = np.array([0, 29.9, 30, 30.01, -45, 60, 60.01, -89, 95])
  np.testing.assert_array_equal(metrics.yaw_bucket(np.deg2rad(deg)), [0, 0, 0, 1, 1, 1, 2, 2, 2])


def test_bucket_summary_is_the_mean_of_bucket_means():
  errors = np.array([1.0, 3.0, 10.0, 20.0, 30.0, 100.0])
  buckets = np.array([0, 0, 1, 1, 1, 2])
  s = metrics.bucket_summary(errors, buckets)
  assert (s['bucket0'], s['bucket1'], s['bucket2']) == (2.0, 20.0, 100.0)
  assert s['bucket_mean'] == pytest.approx(122 / 3) and s['all'] == pytest.approx(164 / 6)
  assert (s['bucket0_count'], s['bucket1_count'], s['bucket2_count']) == (2, 3, 1)
  assert np.isnan(metrics.bucket_summary(errors[:2], buckets[:2])['bucket_mean'])


def test_ced_and_auc_against_brute_force():
  e = np.random.default_rng(3).gamma(2.0, 0.02, 500)
  t = np.linspace(0, 0.1, 41)
  np.testing.assert_array_equal(metrics.ced(e, t), [(e <= x).mean() for x in t])
  fine = np.linspace(0, 0.07, 200001)
  ref = np.trapezoid(metrics.ced(e, fine), fine) / 0.07
  assert metrics.auc(e, 0.07) == pytest.approx(ref, abs=1e-5)
  assert metrics.auc(np.zeros(4), 0.07) == 1.0 and metrics.auc(np.full(4, 0.5), 0.07) == 0.0


def test_unknown_options_are_named():
  pred, gt = landmarks(np.random.default_rng(4))
  with pytest.raises(ValueError, match='normaliser'):
    metrics.nme(pred, gt, 2, norm='iod')
  with pytest.raises(ValueError, match='z alignment'):
    metrics.nme(pred, gt, 3, z_align='median')
  with pytest.raises(ValueError, match='dims'):
    metrics.nme(pred, gt, 4)
