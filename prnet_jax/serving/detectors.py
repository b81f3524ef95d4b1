"""Face detectors: an image -> face boxes, best first. Pluggable by name or by any callable.

    detector = get_detector('dlib_cnn')      # the default ('auto' picks it when installed)
    boxes = detector(rgb_uint8_image)        # (K, 4) float32 (left, top, right, bottom)

* 'dlib_cnn': dlib's CNN (MMOD) face detector, the one the official PRNet code uses; its model
  (0.7 MB) comes inside the `face-recognition-models` wheel and dlib from `dlib-bin`, so there
  is no download at run time. Finds frontal and profile faces; ~0.5-1 s per 450 px image on
  one CPU core.
* 'dlib_hog': dlib's HOG + linear SVM frontal detector (no model file; fast, misses profiles).
* 'haar': OpenCV's bundled Haar cascades (frontal, profile, mirrored profile), merged by NMS.

`benchmarks/detectors.py` measures them on real photos (README: "Face detection").
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Protocol, Union

import numpy as np

DEFAULT = 'auto'
NAMES = ('auto', 'dlib_cnn', 'dlib_hog', 'haar')


class FaceDetector(Protocol):
  def __call__(self, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (K, 4) float boxes (left, top, right, bottom), best first."""


class DetectorError(ValueError):
  """A detector cannot be made (unknown name, package not installed); says which and why."""


def _iou(a, b) -> float:
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = w * h
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / max(union, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.3) -> np.ndarray:
  """Greedy non-maximum suppression: (K, 4) boxes by descending score, overlaps dropped."""
  order = np.argsort(-np.asarray(scores), kind='stable')
  keep: list[int] = []
  for i in order:
    if all(_iou(boxes[i], boxes[j]) < iou for j in keep):
      keep.append(int(i))
  return np.asarray(boxes)[keep]


def _empty() -> np.ndarray:
  return np.zeros((0, 4), np.float32)


class OpenCVCascadeDetector:
  """OpenCV's bundled Haar cascades (frontal, profile and mirrored profile), merged by NMS.

  Installable from PyPI (opencv-python-headless 4.x) with the models inside the wheel. Misses
  strongly rotated faces, and on profiles its box can sit on the back of the head."""

  def __init__(self, min_size_fraction: float = 0.08):
    import cv2
    root = cv2.data.haarcascades
    self._cv2 = cv2
    self._frontal = cv2.CascadeClassifier(os.path.join(root, 'haarcascade_frontalface_alt2.xml'))
    self._profile = cv2.CascadeClassifier(os.path.join(root, 'haarcascade_profileface.xml'))
    self.min_size_fraction = min_size_fraction

  def __call__(self, image: np.ndarray) -> np.ndarray:
    cv2 = self._cv2
    gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))
    h, w = gray.shape
    m = max(int(min(h, w) * self.min_size_fraction), 20)
    found = []
    for cascade, flip in ((self._frontal, False), (self._profile, False), (self._profile, True)):
      g = gray[:, ::-1] if flip else gray
      rects, _, weights = cascade.detectMultiScale3(np.ascontiguousarray(g), 1.1, 4,
                                                    minSize=(m, m), outputRejectLevels=True)
      for (x, y, bw, bh), s in zip(np.asarray(rects).reshape(-1, 4),
                                   np.asarray(weights).reshape(-1)):
        x0 = w - x - bw if flip else x
        found.append((x0, y, x0 + bw, y + bh, float(s) + (1.0 if cascade is self._frontal else 0)))
    if not found:
      return _empty()
    arr = np.asarray(found, np.float64)
    return nms(arr[:, :4], arr[:, 4]).astype(np.float32)


def _import_dlib(what: str):
  try:
    import dlib
  except ImportError as e:
    raise DetectorError(f'the {what} detector needs dlib: pip install dlib-bin ({e})') from e
  return dlib


class _Scaled:
  """Runs a detector on the image shrunk to at most `max_side` px (faces in big photos are big;
  the CNN's time grows with the pixels), boxes mapped back; upsampled once more when nothing is
  found (small faces)."""
  max_side: int
  upsample: int
  fallback_upsample: Optional[int]

  def _detect(self, image: np.ndarray, upsample: int) -> tuple[np.ndarray, np.ndarray]:
    raise NotImplementedError

  def __call__(self, image: np.ndarray) -> np.ndarray:
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    scale = min(1.0, self.max_side / max(h, w))
    if scale < 1.0:
      import cv2
      image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    boxes, scores = self._detect(image, self.upsample)
    if not len(boxes) and self.fallback_upsample is not None:
      boxes, scores = self._detect(image, self.fallback_upsample)
    if not len(boxes):
      return _empty()
    boxes = nms(np.asarray(boxes, np.float64) / scale, np.asarray(scores, np.float64))
    return boxes.astype(np.float32)


class DlibCNNDetector(_Scaled):
  """dlib's CNN (MMOD) face detector with the model of the `face-recognition-models` package
  (or `model_path`). The official PRNet code upsamples once; this upsamples only when nothing is
  found at the image's own size (4-5x faster, the same faces on the benchmark's photos)."""

  def __init__(self, model_path: Optional[str] = None, upsample: int = 0,
               fallback_upsample: Optional[int] = 1, max_side: int = 800):
    dlib = _import_dlib('dlib_cnn')
    if model_path is None:
      try:
        import face_recognition_models
      except ImportError as e:
        raise DetectorError('the dlib_cnn detector needs its model: pip install '
                            f'face-recognition-models ({e})') from e
      model_path = face_recognition_models.cnn_face_detector_model_location()
    if not os.path.isfile(model_path):
      raise DetectorError(f'{model_path}: dlib CNN face detector model not found')
    self._net = dlib.cnn_face_detection_model_v1(model_path)
    self.upsample, self.fallback_upsample, self.max_side = upsample, fallback_upsample, max_side

  def _detect(self, image, upsample):
    found = self._net(image, upsample)
    boxes = [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in found]
    return boxes, [d.confidence for d in found]


class DlibHOGDetector(_Scaled):
  """dlib's HOG frontal face detector (built into dlib)."""

  def __init__(self, upsample: int = 1, fallback_upsample: Optional[int] = None,
               max_side: int = 1200):
    dlib = _import_dlib('dlib_hog')
    self._det = dlib.get_frontal_face_detector()
    self.upsample, self.fallback_upsample, self.max_side = upsample, fallback_upsample, max_side

  def _detect(self, image, upsample):
    rects, scores, _ = self._det.run(image, upsample, 0.0)
    return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects], list(scores)


def get_detector(name: Union[str, Callable, None] = DEFAULT) -> FaceDetector:
  """A detector by name ('auto': dlib_cnn if installed, else haar), or `name` itself if it is
  already a callable. Raises DetectorError for an unknown name or a missing package."""
  if callable(name):
    return name
  name = name or DEFAULT
  if name == 'auto':
    try:
      return DlibCNNDetector()
    except DetectorError:
      return OpenCVCascadeDetector()
  if name == 'dlib_cnn':
    return DlibCNNDetector()
  if name == 'dlib_hog':
    return DlibHOGDetector()
  if name == 'haar':
    return OpenCVCascadeDetector()
  raise DetectorError(f'unknown face detector {name!r}; choose one of {", ".join(NAMES)} '
                      '(or pass a callable image -> boxes)')
