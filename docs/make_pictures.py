"""Re-draws the README's pictures of the bundled model from the shared real photos.

  python docs/make_pictures.py [--shared=../shared/reference] [--output=docs]

Writes pretrained_aflw2000.jpg (folder_eval overlays of the six AFLW2000-3D samples),
pretrained_photos.jpg (predictor overlays of photos/ with the default detector) and
applications.jpg (texture swaps and frontalisations). The browser demo's screenshots come from
its test: PRNET_SCREENSHOT_DIR=docs python -m pytest tests/test_app.py.
"""

import argparse
import os
import sys
import tempfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from prnet_jax.data import image_io  # noqa: E402
from prnet_jax.serving import applications, folder_eval, inference, outputs  # noqa: E402


def _row(images, height):
  ims = [Image.fromarray(i) if isinstance(i, np.ndarray) else i for i in images]
  ims = [i.convert('RGB').resize((round(height * i.width / i.height), height), Image.LANCZOS)
         for i in ims]
  out = Image.new('RGB', (sum(i.width for i in ims), height), (255, 255, 255))
  x = 0
  for i in ims:
    out.paste(i, (x, 0))
    x += i.width
  return out


def _stack(rows):
  w = max(r.width for r in rows)
  out = Image.new('RGB', (w, sum(r.height for r in rows)), (255, 255, 255))
  y = 0
  for r in rows:
    out.paste(r, (0, y))
    y += r.height
  return out


def main():
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--shared', default=os.path.join(here, '..', 'shared', 'reference'))
  p.add_argument('--output', default=os.path.join(here, 'docs'))
  a = p.parse_args()
  aflw = os.path.join(a.shared, 'aflw2000-samples')
  photos = os.path.join(a.shared, 'photos')
  predictor = inference.Predictor.from_pretrained()
  with tempfile.TemporaryDirectory() as tmp:
    folder_eval.main([f'--input={aflw}', f'--output={tmp}'])
    Image.open(os.path.join(tmp, 'overlays.png')).convert('RGB').save(
        os.path.join(a.output, 'pretrained_aflw2000.jpg'), quality=88)
  overlays = []
  for name in sorted(os.listdir(photos)):
    image = image_io.load_photo(os.path.join(photos, name))
    overlays.append(outputs.overlay(image, predictor.predict(image)))
  _row(overlays, 400).save(os.path.join(a.output, 'pretrained_photos.jpg'), quality=88)
  # Swaps: source, target, whole face, eyes; then photos and their frontalisations.
  img = {n: image_io.load_photo(os.path.join(aflw, n + '.jpg'))
         for n in ('image00050', 'image02616', 'image02283', 'image00430', 'image04331')}
  face = {n: predictor.predict(i)[0] for n, i in img.items()}
  rows = []
  for s, t in (('image00050', 'image02616'), ('image02616', 'image00050')):
    swaps = [applications.swap_faces(face[s], img[s], face[t], img[t], predictor.assets, part)
             for part in ('face', 'eyes')]
    rows.append(_row([img[s], img[t], *swaps], 225))
  fronts = []
  for n in ('image00430', 'image02616', 'image04331'):
    fronts += [img[n], applications.frontalize(face[n], img[n], predictor.assets).image]
  rows.append(_row(fronts, 150))
  _stack(rows).save(os.path.join(a.output, 'applications.jpg'), quality=88)
  print('wrote', ', '.join(os.path.join(a.output, f) for f in (
      'pretrained_aflw2000.jpg', 'pretrained_photos.jpg', 'applications.jpg')))


if __name__ == '__main__':
  main()
