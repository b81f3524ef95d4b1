"""Face detectors on real photos: faces found, false positives, time per image.

  python benchmarks/detectors.py [--output=benchmarks/results/detectors.json]
      [--shared=../shared/reference] [--repeats=3]

Images: `photos/` and the AFLW2000-3D images of `aflw2000-samples/` (identical files counted
once). Truth: the box of the 68 ground-truth landmarks (`pt3d_68` of the .mat); for a photo
without a .mat, the landmark box annotated by hand below. A detection finds a face when its
IoU with the truth box is at least 0.4 (detectors frame faces differently from landmark boxes;
0.4 accepts a box on the face and rejects one centred on the head or the hair); every other
detection is a false positive. Time: median of --repeats calls per image after a warm-up call.
Candidates that need a model download at run time or cannot be installed beside this
project's pinned packages are listed in the README with the reason, not measured.
"""

import argparse
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import median, report, time_calls  # noqa: E402
from prnet_jax.data import image_io  # noqa: E402
from prnet_jax.serving import detectors  # noqa: E402

IOU = 0.4
# Landmark boxes (left, top, right, bottom) of photos without a .mat, annotated by hand.
HAND_BOXES = {'3.jpg': (97, 150, 235, 320)}  # left profile: nose tip to jaw corner, brow to chin


def truth_boxes(shared: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """(name, image, (1, 4) truth box) per distinct image."""
  import scipy.io
  out, seen = [], set()
  # AFLW2000-3D first: a photo that is one of its images is then known by its .mat.
  folders = [os.path.join(shared, 'aflw2000-samples'), os.path.join(shared, 'photos')]
  for folder in folders:
    for name in sorted(os.listdir(folder)):
      if not name.lower().endswith(('.jpg', '.png')):
        continue
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        digest = hashlib.sha1(f.read()).hexdigest()
      if digest in seen:
        continue
      seen.add(digest)
      mat = os.path.splitext(path)[0] + '.mat'
      if os.path.exists(mat):
        pts = scipy.io.loadmat(mat)['pt3d_68'][:2].T
        box = np.array([*pts.min(0), *pts.max(0)])
      elif name in HAND_BOXES:
        box = np.array(HAND_BOXES[name], np.float64)
      else:
        print(f'skipped {path}: no .mat and no hand-annotated box')
        continue
      out.append((name, image_io.load_photo(path), box[None]))
  return out


def score(found: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
  """(faces found, false positives) of detections `found` against the truth boxes."""
  used, hits = set(), 0
  for t in truth:
    ious = [detectors._iou(b, t) if i not in used else 0.0 for i, b in enumerate(found)]  # pylint: disable=protected-access
    if ious and max(ious) >= IOU:
      used.add(int(np.argmax(ious)))
      hits += 1
  return hits, len(found) - len(used)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  p.add_argument('--shared', default=os.path.join(here, '..', 'shared', 'reference'))
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--output', default=None)
  a = p.parse_args()
  images = truth_boxes(a.shared)
  candidates = [
      ('haar (OpenCV cascades)', lambda: detectors.OpenCVCascadeDetector()),
      ('dlib_hog', lambda: detectors.DlibHOGDetector()),
      ('dlib_cnn (default)', lambda: detectors.DlibCNNDetector()),
      ('dlib_cnn, upsample 1 (official)', lambda: detectors.DlibCNNDetector(upsample=1)),
  ]
  rows = []
  for name, make in candidates:
    try:
      det = make()
    except detectors.DetectorError as e:
      print(f'{name}: not available ({e})')
      continue
    found = fp = 0
    times, missed = [], []
    for img_name, image, truth in images:
      det(image)  # warm-up
      times.append(median(time_calls(lambda: det(image), a.repeats)))
      h, f = score(det(image), truth)
      found, fp = found + h, fp + f
      if h < len(truth):
        missed.append(img_name)
    rows.append({'detector': name, 'faces': sum(len(t) for _, _, t in images),
                 'found': found, 'false_positives': fp,
                 'ms_per_image': 1000 * float(np.mean(times)),
                 'missed': ' '.join(missed) or '-'})
  report('detectors', rows, ['detector', 'faces', 'found', 'false_positives', 'ms_per_image',
                             'missed'], a.output)


if __name__ == '__main__':
  main()
