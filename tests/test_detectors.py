"""Face detectors: NMS, the pluggable interface, the shrink/upsample wrapper, real photos."""

import os

import numpy as np
import pytest

from prnet_jax.data import image_io
from prnet_jax.serving import detectors, inference


def _iou_brute(a, b, n=400):
  """IoU by counting points of a fine grid (a reference for the closed form)."""
  lo, hi = np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])
  xs, ys = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
  ina = (xs >= a[0]) & (xs <= a[2]) & (ys >= a[1]) & (ys <= a[3])
  inb = (xs >= b[0]) & (xs <= b[2]) & (ys >= b[1]) & (ys <= b[3])
  return (ina & inb).sum() / max((ina | inb).sum(), 1)


def test_nms_keeps_the_best_of_each_overlapping_group():
  rng = np.random.default_rng(0)
  for _ in range(20):
    a, b = np.sort(rng.uniform(0, 100, (2, 2, 2)), axis=1).transpose(0, 2, 1).reshape(2, 4)
    a, b = a[[0, 2, 1, 3]], b[[0, 2, 1, 3]]  # (l, t, r, b)
    assert abs(detectors._iou(a, b) - _iou_brute(a, b)) < 0.02
  boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 9, 10.]])
  scores = np.array([0.5, 0.9, 0.1, 0.2])
  kept = detectors.nms(boxes, scores)
  np.testing.assert_array_equal(kept, boxes[[1, 2]])  # best of the overlapping three, then far


def test_get_detector_by_name_callable_or_a_clear_error():
  fake = lambda image: np.zeros((0, 4))
  assert detectors.get_detector(fake) is fake
  assert isinstance(detectors.get_detector('haar'), detectors.OpenCVCascadeDetector)
  with pytest.raises(detectors.DetectorError, match="unknown face detector 'yolo'.*dlib_cnn"):
    detectors.get_detector('yolo')


def test_auto_is_dlib_cnn_when_installed_and_haar_otherwise(monkeypatch):
  try:
    import dlib  # noqa: F401
    import face_recognition_models  # noqa: F401
  except ImportError:
    assert isinstance(detectors.get_detector('auto'), detectors.OpenCVCascadeDetector)
    return
  assert isinstance(detectors.get_detector('auto'), detectors.DlibCNNDetector)
  monkeypatch.setattr(detectors, '_import_dlib',
                      lambda what: (_ for _ in ()).throw(detectors.DetectorError('no dlib')))
  assert isinstance(detectors.get_detector('auto'), detectors.OpenCVCascadeDetector)
  with pytest.raises(detectors.DetectorError, match='no dlib'):
    detectors.get_detector('dlib_cnn')


class _Fake(detectors._Scaled):
  """Finds one box at a fixed place of whatever image it gets, only at `finds_at` upsampling."""

  def __init__(self, finds_at, max_side, fallback=1):
    self.upsample, self.fallback_upsample, self.max_side = 0, fallback, max_side
    self.finds_at, self.calls = finds_at, []

  def _detect(self, image, upsample):
    self.calls.append((image.shape, upsample))
    if upsample != self.finds_at:
      return [], []
    h, w = image.shape[:2]
    return [(0.25 * w, 0.5 * h, 0.75 * w, h)], [1.0]


def test_scaled_detection_maps_boxes_back_and_upsamples_only_when_nothing_is_found():
  image = np.zeros((1000, 2000, 3), np.uint8)
  det = _Fake(finds_at=0, max_side=500)
  np.testing.assert_allclose(det(image), [[500, 500, 1500, 1000]], atol=2.5)
  assert det.calls == [((250, 500, 3), 0)]  # shrunk to 500 px, one call
  det = _Fake(finds_at=1, max_side=4000)
  np.testing.assert_allclose(det(image), [[500, 500, 1500, 1000]])
  assert [u for _, u in det.calls] == [0, 1] and det.calls[0][0] == image.shape
  assert _Fake(finds_at=2, max_side=4000)(image).shape == (0, 4)
  assert _Fake(finds_at=1, max_side=4000, fallback=None)(image).shape == (0, 4)


def test_predictor_takes_a_detector_by_name_and_reports_a_bad_one():
  p = inference.Predictor.from_pretrained(detector='haar')
  assert isinstance(p.detector, detectors.OpenCVCascadeDetector)
  with pytest.raises(inference.PredictError, match='unknown face detector'):
    inference.Predictor.from_pretrained(detector='nope').detector  # pylint: disable=expression-not-assigned


def _truth(folder, name):
  import scipy.io
  pts = scipy.io.loadmat(os.path.join(folder, name[:-4] + '.mat'))['pt3d_68'][:2].T
  return np.array([*pts.min(0), *pts.max(0)])


@pytest.mark.slow(reason='CNN face detector on real photos')
def test_the_default_detector_finds_every_face_of_the_shared_images():
  """dlib's CNN detector: one box on the face (IoU >= 0.4 with the landmark box) and no other,
  on the six AFLW2000-3D images (poses to 45 degrees yaw) and the profile photo (its face box
  annotated by hand, as in benchmarks/detectors.py)."""
  pytest.importorskip('dlib')
  pytest.importorskip('face_recognition_models')
  from conftest import PROFILE_BOX, shared_path
  det = detectors.get_detector('auto')
  assert isinstance(det, detectors.DlibCNNDetector)
  folder = shared_path('aflw2000-samples')
  cases = [(os.path.join(folder, n), _truth(folder, n))
           for n in sorted(os.listdir(folder)) if n.endswith('.jpg')]
  cases.append((shared_path('photos', '3.jpg'), np.array(PROFILE_BOX, np.float64)))
  assert len(cases) == 7
  for path, truth in cases:
    boxes = det(image_io.load_photo(path))
    assert len(boxes) == 1, (path, boxes)
    assert detectors._iou(boxes[0], truth) >= 0.4, (path, boxes, truth)
