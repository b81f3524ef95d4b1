"""Video smoothing (prnet_jax.serving.smoothing): less jitter on a synthetic sequence with known
motion, little lag, faces kept apart."""

import dataclasses

import numpy as np
import pytest

from prnet_jax.serving import smoothing


@dataclasses.dataclass
class FakeFace:
  landmarks: np.ndarray
  pose_angles_deg: np.ndarray


def sequence(frames=150, rate=30.0, noise=1.5, seed=0, start=(200.0, 150.0)):
  """A face of ~100 px swaying left-right (0.5 Hz, 40 px) and turning (yaw +-20 degrees), with
  Gaussian detection noise of `noise` px (and degrees / 4)."""
  rng = np.random.default_rng(seed)
  shape = np.random.default_rng(1).uniform(-50, 50, (68, 3))
  t = np.arange(frames) / rate
  shift = np.stack([start[0] + 40 * np.sin(np.pi * t), start[1] + 0 * t, 0 * t], -1)
  truth = shape[None] + shift[:, None]
  angles = np.stack([20 * np.sin(np.pi * t), 0 * t, 0 * t], -1)
  seen = truth + rng.normal(0, noise, truth.shape)
  seen_angles = angles + rng.normal(0, noise / 4, angles.shape)
  return truth, angles, seen, seen_angles


def test_one_euro_filter_removes_jitter_and_follows_the_motion():
  truth, angles, seen, seen_angles = sequence()
  smoother = smoothing.FaceSmoother(rate=30.0)
  out = [smoother([FakeFace(l, a)])[0] for l, a in zip(seen, seen_angles)]
  smoothed = np.stack([f.landmarks for f in out])
  smoothed_angles = np.stack([f.pose_angles_deg for f in out])
  assert smoothing.jitter(smoothed) < 0.5 * smoothing.jitter(seen)
  assert smoothing.jitter(smoothed_angles) < 0.5 * smoothing.jitter(seen_angles)
  # Closer to the true positions than the raw detections, lag included (after the first second).
  err = lambda x: np.linalg.norm(x[30:] - truth[30:], axis=-1).mean()
  assert err(smoothed) < 0.85 * err(seen), (err(smoothed), err(seen))
  # A still face keeps far less of its jitter.
  still = truth[0][None] + np.random.default_rng(5).normal(0, 1.5, (150, 68, 3))
  smoother = smoothing.FaceSmoother(rate=30.0)
  held = np.stack([smoother([FakeFace(l, np.zeros(3))])[0].landmarks for l in still])
  assert smoothing.jitter(held[30:]) < 0.25 * smoothing.jitter(still[30:])
  assert np.abs(smoothed_angles[30:] - angles[30:]).mean() < np.abs(seen_angles[30:] - angles[30:]).mean()


def test_a_fast_move_is_followed_within_a_few_frames():
  """A jump of half a face: the speed term opens the filter (a fixed low-pass would lag)."""
  base = np.random.default_rng(2).uniform(-50, 50, (68, 3)) + 200
  smoother = smoothing.FaceSmoother(rate=30.0)
  for _ in range(30):
    smoother([FakeFace(base, np.zeros(3))])
  moved = base + [45.0, 0, 0]
  gaps = [np.abs(smoother([FakeFace(moved, np.zeros(3))])[0].landmarks - moved)[:, 0].mean()
          for _ in range(10)]
  assert gaps[5] < 0.1 * 45 and gaps == sorted(gaps, reverse=True)


def test_two_faces_are_smoothed_separately_and_the_input_is_untouched():
  a = sequence(seed=3, start=(150.0, 150.0))[2]
  b = sequence(seed=4, start=(600.0, 150.0))[2]
  smoother = smoothing.FaceSmoother(rate=30.0)
  outs = []
  for k in range(60):
    faces = [FakeFace(b[k], np.zeros(3)), FakeFace(a[k], np.zeros(3))]
    if k % 2:  # the detector's order changes between frames
      faces = faces[::-1]
    before = faces[0].landmarks.copy()
    out = smoother(faces)
    np.testing.assert_array_equal(faces[0].landmarks, before)
    outs.append(sorted(out, key=lambda f: f.landmarks[:, 0].mean()))
  left = np.stack([o[0].landmarks for o in outs])
  right = np.stack([o[1].landmarks for o in outs])
  assert np.abs(left[:, :, 0].mean(1) - 150).max() < 60 and np.abs(right[:, :, 0].mean(1) - 600).max() < 60
  assert smoothing.jitter(left) < 0.5 * smoothing.jitter(a[:60])
  assert len(smoother.tracks) == 2


def test_bad_filter_parameters_are_refused():
  with pytest.raises(ValueError, match='One-Euro filter needs'):
    smoothing.FaceSmoother(rate=0)
