"""Image-space parts of the face world: backgrounds, long hair, occluders, camera effects.

Host functions (numpy, PIL and OpenCV) of a `np.random.Generator`, so a seed fixes every draw. Images
are (S, S, 3) float32 in [0, 1]; points are pixels (x = column, y = row). None of these change the
ground truth: a face behind a hand or under a hat keeps its full position map, as in 300W-LP.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# ---------------------------------------------------------------------------- backgrounds


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1
                  ) -> np.ndarray:
  """(S, S, C) bilinearly upsampled uniform noise from a `cells` x `cells` grid, in [0, 1]."""
  grid = rng.random((cells + 1, cells + 1, channels)).astype(np.float32)
  img = Image.fromarray(np.uint8(grid * 255).reshape(cells + 1, cells + 1, channels).squeeze(-1)
                        if channels == 1 else np.uint8(grid * 255))
  out = np.asarray(img.resize((size, size), Image.BILINEAR), np.float32) / 255
  return out.reshape(size, size, channels)


def fractal_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """Natural-looking texture: colour noise at several scales (about 1/f), two tinted colours."""
  t = sum(_smooth_noise(rng, size, c) * w for c, w in ((3, 0.5), (8, 0.25), (24, 0.15),
                                                       (64, 0.1)))
  t = (t - t.min()) / max(np.ptp(t), 1e-6)
  c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
  img = c0 * (1 - t) + c1 * t
  return img + 0.15 * (_smooth_noise(rng, size, 5, 3) - 0.5)


def indoor_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """A room seen behind a person: a lit wall, a floor or ceiling line, doors, windows, shelves
  and frames as rectangles, with a light falloff."""
  wall = rng.uniform(0.2, 0.95, 3) * rng.uniform(0.5, 1.0)
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
  lx, ly = rng.uniform(-0.5, 1.5, 2)
  fall = 1.0 - rng.uniform(0.2, 0.6) * np.clip(np.hypot(xs - lx, ys - ly), 0, 1.5) / 1.5
  img = np.ones((size, size, 3), np.float32) * wall * fall[..., None]
  im = Image.fromarray(np.uint8(np.clip(img, 0, 1) * 255))
  d = ImageDraw.Draw(im)
  if rng.random() < 0.6:
    y = int(rng.uniform(0.5, 0.95) * size)
    d.rectangle([0, y, size, size], fill=tuple(int(v) for v in rng.uniform(20, 200, 3)))
  for _ in range(rng.integers(2, 8)):
    x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
    w, h = rng.uniform(0.08, 0.6, 2) * size
    grey = rng.uniform(0, 255)
    fill = tuple(int(v) for v in grey + rng.uniform(0.1, 0.6) * (rng.uniform(0, 255, 3) - grey))
    if rng.random() < 0.4:  # a frame or window: outline with a lighter inside
      d.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(min(255, int(v * 1.4) + 30) for v in fill),
                  outline=fill, width=int(rng.integers(2, 8)))
    else:
      d.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
  return np.asarray(im, np.float32) / 255


def shape_clutter(rng: np.random.Generator, size: int) -> np.ndarray:
  """(S, S, 3) float32 in [0, 1]: a gradient, smooth noise and random shapes."""
  ys, xs = np.mgrid[0:size, 0:size] / size
  c0, c1 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
  t = (xs * np.cos(a := rng.uniform(0, 2 * np.pi)) + ys * np.sin(a))[..., None]
  img = c0 * (1 - t) + c1 * t
  low = rng.uniform(-0.15, 0.15, (6, 6, 3))
  img = img + np.kron(low, np.ones((size // 6 + 1, size // 6 + 1, 1)))[:size, :size]
  for _ in range(rng.integers(6, 16)):
    colour = rng.uniform(0, 1, 3)
    cx, cy, rx, ry = rng.uniform(0, 1, 4) * [1, 1, 0.3, 0.3] + [0, 0, 0.03, 0.03]
    if rng.random() < 0.5:
      m = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1
    else:
      m = (np.abs(xs - cx) < rx) & (np.abs(ys - cy) < ry)
    img[m] = 0.3 * img[m] + 0.7 * colour
  img = img + rng.normal(0, 0.02, img.shape)
  return np.clip(img, 0, 1).astype(np.float32)


def clutter_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """Overlapping shapes of random colours over a gradient, desaturated towards the colours of
  real scenes."""
  img = shape_clutter(rng, size)
  grey = img.mean(-1, keepdims=True)
  return grey + rng.uniform(0.3, 0.8) * (img - grey)


def plain_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """A plain backdrop, as in studio portraits and passport photos: black (a third of draws),
  white, grey or a muted colour, with a soft light falloff. A network that never saw one reads
  a dark profile on black as a face turned the other way."""
  kind = rng.random()
  if kind < 1 / 3:
    colour = np.full(3, rng.uniform(0.0, 0.08))
  elif kind < 0.5:
    colour = np.full(3, rng.uniform(0.85, 1.0))
  elif kind < 0.75:
    colour = np.full(3, rng.uniform(0.15, 0.85))
  else:
    grey = rng.uniform(0.15, 0.85)
    colour = np.clip(grey + rng.uniform(0.1, 0.5) * (rng.uniform(0, 1, 3) - 0.5), 0, 1)
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
  lx, ly = rng.uniform(0.0, 1.0, 2)
  fall = 1.0 - rng.uniform(0.0, 0.35) * np.clip(np.hypot(xs - lx, ys - ly), 0, 1.2) / 1.2
  return (colour[None, None, :] * fall[..., None]).astype(np.float32)


BACKGROUNDS = {'fractal': fractal_background, 'indoor': indoor_background,
               'clutter': clutter_background, 'plain': plain_background}


def background(rng: np.random.Generator, size: int, kinds=('fractal', 'indoor', 'clutter'),
               max_blur: float = 3.0) -> np.ndarray:
  """(S, S, 3) float32: a background of a random kind, drawn at half size (it is defocused
  anyway, and this halves its cost) and defocused by up to `max_blur` px."""
  import cv2
  half = max(size // 2, 8)
  img = BACKGROUNDS[kinds[rng.integers(len(kinds))]](rng, half)
  radius = rng.uniform(0, max_blur) / 2
  if radius > 0.3:
    img = _blur(img, radius)
  img = cv2.resize(np.asarray(img, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
  return np.clip(img, 0, 1)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
  import cv2
  return cv2.GaussianBlur(np.asarray(img, np.float32), (0, 0), sigma)


def smooth_silhouette(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Anti-aliases the edge of a rendered object: pixels whose 3 x 3 neighbourhood is part
  inside, part outside `mask` (S, S) take their neighbourhood's mean."""
  m = np.pad(mask.astype(np.float32), 1, mode='edge')
  p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode='edge')
  s = img.shape[0]
  box = lambda a: sum(a[i:i + s, j:j + s] for i in range(3) for j in range(3)) / 9
  frac = box(m)
  edge = (frac > 0) & (frac < 1)
  return np.where(edge[..., None], box(p), img)

# ---------------------------------------------------------------------------- hair


def strand_texture(rng: np.random.Generator, size: int, colour: np.ndarray,
                   angle: float = 0.0) -> np.ndarray:
  """(S, S, 3) hair: `colour` with strands (stripes of random brightness) along `angle`
  (radians from the image's vertical)."""
  cells = size // 2
  stripes = rng.uniform(0.55, 1.35, cells + 1)
  xs = np.linspace(0, cells, size * 2)
  line = np.interp(xs, np.arange(cells + 1), stripes)
  tex = np.tile(line[None, :], (size * 2, 1)) * (0.85 + 0.3 * _smooth_noise(rng, size * 2, 6)[..., 0])
  im = Image.fromarray(np.uint8(np.clip(tex / 1.6, 0, 1) * 255)).rotate(np.rad2deg(angle),
                                                                      Image.BILINEAR)
  c = size // 2
  tex = np.asarray(im, np.float32)[c:c + size, c:c + size] / 255 * 1.6
  return np.clip(colour[None, None, :] * tex[..., None], 0, 1).astype(np.float32)


def long_hair(rng: np.random.Generator, img: np.ndarray, scalp_xy: np.ndarray,
              colour: np.ndarray, down: np.ndarray) -> np.ndarray:
  """Paints long hair behind a head onto `img` (the background, before the head is drawn): the
  convex outline of the hair-covered scalp `scalp_xy` (N, 2), widened, falling along the unit
  image direction `down` (the head's chin direction) to the shoulders."""
  size = img.shape[0]
  if len(scalp_xy) < 3:
    return img
  centre = scalp_xy.mean(0)
  spread = np.ptp(scalp_xy, axis=0).max()
  pts = centre + (scalp_xy - centre) * rng.uniform(1.08, 1.25)
  length = spread * rng.uniform(0.6, 1.6)
  side = np.array([-down[1], down[0]])
  proj = (pts - centre) @ side
  left, right = pts[np.argmin(proj)], pts[np.argmax(proj)]
  flare = rng.uniform(0.0, 0.25) * spread
  drape = [right + down * length + side * flare, left + down * length - side * flare]
  poly = np.concatenate([_hull(pts), drape])
  mask = Image.new('L', (size * 2, size * 2), 0)
  ImageDraw.Draw(mask).polygon([tuple(p) for p in poly * 2], fill=255)
  mask = mask.filter(ImageFilter.GaussianBlur(2)).resize((size, size), Image.BILINEAR)
  alpha = np.asarray(mask, np.float32)[..., None] / 255
  tex = strand_texture(rng, size, colour, np.arctan2(-down[0], down[1]))
  return img * (1 - alpha) + tex * alpha


def _hull(points: np.ndarray) -> np.ndarray:
  """Convex hull of (N, 2) points, (M, 2) in order."""
  import cv2
  return cv2.convexHull(np.asarray(points, np.float32)).reshape(-1, 2).astype(np.float64)

# ---------------------------------------------------------------------------- occluders


def _colour(rng, lo=0, hi=255):
  return tuple(int(v) for v in rng.uniform(lo, hi, 3))


def _glasses(rng, d: ImageDraw.ImageDraw, lm: np.ndarray, k: float):
  frame = _colour(rng, 0, 120) if rng.random() < 0.7 else _colour(rng)
  tint = rng.random() < 0.3
  width = max(1, int(rng.uniform(1.0, 3.5) * k))
  eye_w = np.linalg.norm(lm[39] - lm[36])
  centres = [lm[36:42].mean(0), lm[42:48].mean(0)]
  rx, ry = eye_w * rng.uniform(0.75, 1.0), eye_w * rng.uniform(0.45, 0.7)
  for c in centres:
    box = [(c[0] - rx) * k, (c[1] - ry) * k, (c[0] + rx) * k, (c[1] + ry) * k]
    fill = (*_colour(rng, 0, 80), int(rng.uniform(120, 220))) if tint else None
    # Pillow's rounded_rectangle fails on lenses only a few outline widths across (far profiles).
    if rng.random() < 0.5 or min(rx, ry) * k < 2 * width + 2:
      d.ellipse(box, outline=(*frame, 255), width=width, fill=fill)
    else:
      d.rounded_rectangle(box, radius=ry * k * 0.5, outline=(*frame, 255), width=width, fill=fill)
  a, b = centres[0] + [rx, 0], centres[1] - [rx, 0]
  d.line([tuple(a * k), tuple(b * k)], fill=(*frame, 255), width=width)
  for c, s, jaw in ((centres[0], -1, lm[0]), (centres[1], 1, lm[16])):
    d.line([((c[0] + s * rx) * k, c[1] * k), (jaw[0] * k, jaw[1] * k)], fill=(*frame, 255),
           width=width)


def _hand(rng, d, lm, k, skin):
  face = np.ptp(lm[:, 0]) + 1
  c = lm[rng.choice([8, 57, 3, 13, 30, 5, 11])] + rng.normal(0, 0.15 * face, 2)
  ang = rng.uniform(0, 2 * np.pi)
  u = np.array([np.cos(ang), np.sin(ang)])
  v = np.array([-u[1], u[0]])
  palm = face * rng.uniform(0.3, 0.45)
  tone = tuple(int(255 * min(1, x * rng.uniform(0.85, 1.1))) for x in skin)
  pts = [c + palm * (np.cos(t) * u * 0.9 + np.sin(t) * v * 0.75) for t in np.linspace(0, 2 * np.pi, 24)]
  d.polygon([tuple(p * k) for p in pts], fill=(*tone, 255))
  fw = palm * 0.32
  for i in range(4):
    base = c + u * palm * 0.7 + v * palm * (-0.6 + 0.4 * i)
    tip = base + u * palm * rng.uniform(0.8, 1.3)
    d.line([tuple(base * k), tuple(tip * k)], fill=(*tone, 255), width=int(fw * k))
    d.ellipse([(tip[0] - fw / 2) * k, (tip[1] - fw / 2) * k, (tip[0] + fw / 2) * k,
               (tip[1] + fw / 2) * k], fill=(*tone, 255))
  thumb = c - v * palm * 0.9 + u * palm * 0.2
  d.line([tuple((c - v * palm * 0.5) * k), tuple(thumb * k)], fill=(*tone, 255),
         width=int(fw * 1.1 * k))


def _hat(rng, d, lm, k):
  col = _colour(rng, 0, 220)
  brow = lm[17:27]
  up = brow.mean(0) - lm[8]
  up = up / (np.linalg.norm(up) + 1e-6)
  width = np.linalg.norm(lm[16] - lm[0])
  lift = width * rng.uniform(0.05, 0.3)
  left, right = lm[0] + up * (np.linalg.norm(lm[0] - brow[0]) + lift), \
      lm[16] + up * (np.linalg.norm(lm[16] - brow[-1]) + lift)
  side = (right - left) * rng.uniform(0.1, 0.3)
  crown = [left - side, right + side, right + up * width * 0.9, left + up * width * 0.9]
  d.polygon([tuple(p * k) for p in crown], fill=(*col, 255))
  if rng.random() < 0.6:  # a brim or peak
    brim = [left - side * 1.6, right + side * 1.6, right + side - up * width * 0.08,
            left - side - up * width * 0.08]
    d.polygon([tuple(p * k) for p in brim], fill=(*tuple(int(c * 0.8) for c in col), 255))


def _microphone(rng, d, lm, k):
  face = np.ptp(lm[:, 0]) + 1
  c = lm[rng.choice([57, 8, 54, 48])] + rng.normal(0, 0.1 * face, 2) + [0, face * 0.15]
  r = face * rng.uniform(0.1, 0.2)
  ang = rng.uniform(0.3, 2.8)
  end = c + np.array([np.cos(ang), np.sin(ang)]) * face * 1.5
  d.line([tuple(c * k), tuple(end * k)], fill=(*_colour(rng, 0, 60), 255), width=int(r * 0.7 * k))
  grey = int(rng.uniform(40, 160))
  d.ellipse([(c[0] - r) * k, (c[1] - r) * k, (c[0] + r) * k, (c[1] + r) * k],
            fill=(grey, grey, grey, 255))


def _object(rng, d, lm, k):
  face = np.ptp(lm[:, 0]) + 1
  c = lm[rng.integers(68)] + rng.normal(0, 0.3 * face, 2)
  w, h = rng.uniform(0.15, 0.6, 2) * face
  box = [(c[0] - w) * k, (c[1] - h) * k, (c[0] + w) * k, (c[1] + h) * k]
  (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=(*_colour(rng), 255))


OCCLUDERS = ('glasses', 'hand', 'hat', 'microphone', 'object')


def occlude(rng: np.random.Generator, img: np.ndarray, landmarks: np.ndarray,
            skin: np.ndarray, probabilities: dict[str, float]) -> tuple[np.ndarray, list[str]]:
  """Draws each occluder with its probability near the 68 2D `landmarks` (68, 2+): glasses on
  the eyes, a hand, a hat, a microphone, a plain object. Returns (image, names drawn)."""
  size, k = img.shape[0], 2  # drawn at 2x and reduced: smooth edges
  lm = np.asarray(landmarks, np.float64)[:, :2]
  drawn = [n for n in OCCLUDERS if rng.random() < probabilities.get(n, 0.0)]
  if not drawn:
    return img, drawn
  layer = Image.new('RGBA', (size * k, size * k), (0, 0, 0, 0))
  d = ImageDraw.Draw(layer)
  for name in drawn:
    if name == 'glasses':
      _glasses(rng, d, lm, k)
    elif name == 'hand':
      _hand(rng, d, lm, k, skin)
    elif name == 'hat':
      _hat(rng, d, lm, k)
    elif name == 'microphone':
      _microphone(rng, d, lm, k)
    else:
      _object(rng, d, lm, k)
  layer = np.asarray(layer.resize((size, size), Image.BOX), np.float32) / 255
  alpha = layer[..., 3:]
  # Occluders are lit too: a soft gradient across each.
  shade = 0.75 + 0.35 * _smooth_noise(rng, size, 3)
  out = img * (1 - alpha) + np.clip(layer[..., :3] * shade, 0, 1) * alpha
  return out, drawn

# ---------------------------------------------------------------------------- camera


def camera(rng: np.random.Generator, img: np.ndarray, cfg) -> np.uint8:
  """(S, S, 3) uint8: `img` through a random camera (see `ICTWorldConfig`'s camera fields):
  colour cast and contrast, defocus or motion blur, low resolution, sensor noise, JPEG."""
  size = img.shape[0]
  gain = (1 + rng.uniform(-cfg.colour_cast, cfg.colour_cast, 3)).astype(np.float32)
  img = np.clip(np.asarray(img, np.float32) * gain, 0, 1) ** np.float32(
      rng.uniform(1 / cfg.gamma, cfg.gamma))
  import cv2
  r = rng.random()
  if r < cfg.p_defocus:
    img = _blur(img, rng.uniform(0.5, cfg.max_defocus))
  elif r < cfg.p_defocus + cfg.p_motion_blur:
    n = int(rng.integers(3, cfg.max_motion + 1))
    ang = rng.uniform(0, np.pi)
    kernel = np.zeros((n, n), np.float32)
    c = (n - 1) / 2
    for t in np.linspace(-c, c, 2 * n):
      kernel[int(round(c + t * np.sin(ang))), int(round(c + t * np.cos(ang)))] = 1
    img = cv2.filter2D(np.asarray(img, np.float32), -1, kernel / kernel.sum(),
                       borderType=cv2.BORDER_REFLECT)
  arr = np.clip(img, 0, 1) * 255
  if rng.random() < cfg.p_low_resolution:
    small = int(size * rng.uniform(cfg.min_resolution, 0.8))
    arr = cv2.resize(cv2.resize(arr, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                     interpolation=cv2.INTER_LINEAR)
  sigma = rng.uniform(0, cfg.max_noise) * 255
  if sigma > 0.5:
    arr = arr + rng.standard_normal(arr.shape, dtype=np.float32) * sigma
  out = np.uint8(np.clip(arr, 0, 255) + 0.5)
  if rng.random() < cfg.p_jpeg:
    quality = int(rng.integers(cfg.min_jpeg_quality, 96))
    _, buf = cv2.imencode('.jpg', out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
  return np.ascontiguousarray(out)
