r"""The benchmark's 68 landmarks on the ICT face: where BFM-68 points lie on ICT's surface.

300W-LP, AFLW2000-3D and the official PRNet use 68 fixed vertices of the Basel Face Model
(3DDFA's `keypoints`): projected, they are the 2D ground truth of every fitted face, the jaw
included (fixed cheek vertices, not the visible outline). ICT-FaceKit's own 68 landmark vertices
follow another definition (brows higher, eyes lower, the jaw on the jaw bone), so a model that
learned them pays the difference on every real face. This module moves the 68 points onto the
ICT surface where the BFM mean face has them:

1. a similarity from BFM's mean keypoints to ICT's neutral landmarks on the points whose
   definitions agree (nose, eye corners and lids, mouth corners);
2. ICP of the BFM mean surface onto the ICT position-map surface (30% farthest pairs trimmed),
   which refines that similarity with the whole face;
3. each mapped BFM keypoint projected to the nearest point of the ICT surface's face region
   (ICT's own triangles, not the caps closing the eyes and mouth in the map; depth counted at
   half weight; a triangle and barycentric weights), so it moves with every identity and
   expression.

    python -m prnet_jax.faces.landmark_calibration \
        --bfm=../shared/reference/bfm-metadata/Model_Shape_Sim.mat [--surface=skin]

writes `prnet_jax/assets/ict_landmarks_bfm68.npz` (the 'ict' layout's points, on its map's face
region) or, with `--surface=skin`, `ict_landmarks_bfm68_skin.npz` (the 'ict_bfm68' layout's,
anywhere on ICT's face, head and neck: the layout is then fitted to them): `corners` (68, 3)
ICT vertex indices (over `ict_model.load()`'s numbering) and `weights` (68, 3) barycentric
weights. The file holds no BFM
geometry, only where ICT's own surface carries the points (see LICENSE). The BFM file is 3DDFA's
`Model_Shape_Sim.mat` (`mu_shape`, `keypoints`), in the AFLW2000-3D release.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import numpy as np

from prnet_jax.faces import face_model as fm
from prnet_jax.faces import ict_face, ict_model
from prnet_jax.geometry import transforms

SHIPPED = ict_face.LANDMARK_POINTS
# Which surface each shipped file's points lie on (`calibrate(surface=...)`).
SURFACES = ('face_region', 'skin')
SHIPPED_FOR = {'face_region': ict_face.LANDMARK_POINTS, 'skin': ict_face.LANDMARK_POINTS_SKIN}
# Landmarks whose meaning is the same in both definitions: nose (27-35), eyes (36-47), mouth
# corners (48, 54).
AGREED = tuple(range(27, 48)) + (48, 54)


class CalibrationError(ValueError):
  """An input that cannot be calibrated (names the file and the problem)."""


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
  """Least-squares similarity (scale, rotation, translation) mapping src onto dst (float64;
  Umeyama 1991, no reflections)."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  xs, xd = src - mu_s, dst - mu_d
  u, sig, vt = np.linalg.svd(xd.T @ xs)
  e = np.array([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
  r = (u * e) @ vt
  s = float((sig * e).sum() / (xs ** 2).sum())
  return s, r, mu_d - s * mu_s @ r.T


def closest_points(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The nearest surface point of a triangle mesh to each query point (exact, brute force).

  points (P, 3), vertices (V, 3), triangles (T, 3) -> (triangle index (P,), barycentric
  weights (P, 3), distance (P,))."""
  a, b, c = (np.asarray(vertices, np.float64)[triangles[:, k]] for k in range(3))
  ab, ac = b - a, c - a
  n = np.cross(ab, ac)
  nn = np.maximum((n * n).sum(1), 1e-300)
  out_t, out_w, out_d = [], [], []
  for p in np.asarray(points, np.float64):
    ap = p - a
    wb = np.einsum('ij,ij->i', np.cross(ap, ac), n) / nn
    wc = np.einsum('ij,ij->i', np.cross(ab, ap), n) / nn
    cands = [np.stack([1 - wb - wc, wb, wc], 1)]
    inside = (cands[0] >= 0).all(1)
    for i, j in ((0, 1), (1, 2), (0, 2)):   # nearest points of the three edges
      x = (a, b, c)[i]
      e = (a, b, c)[j] - x
      t = np.clip(((p - x) * e).sum(1) / np.maximum((e * e).sum(1), 1e-300), 0, 1)
      w = np.zeros_like(cands[0])
      w[:, i], w[:, j] = 1 - t, t
      cands.append(w)
    best_d, best_w = np.full(len(a), np.inf), cands[0]
    for k, w in enumerate(cands):
      q = w[:, :1] * a + w[:, 1:2] * b + w[:, 2:] * c
      d = np.linalg.norm(q - p, axis=1)
      if k == 0:
        d = np.where(inside, d, np.inf)
      better = d < best_d
      best_d = np.where(better, d, best_d)
      best_w = np.where(better[:, None], w, best_w)
    t = int(np.argmin(best_d))
    out_t.append(t)
    out_w.append(best_w[t])
    out_d.append(best_d[t])
  return np.asarray(out_t), np.asarray(out_w), np.asarray(out_d)


def read_bfm_mean(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(V, 3) BFM mean shape in centimetres and its (68,) 0-based keypoint vertices, from 3DDFA's
  `Model_Shape_Sim.mat` (or face3d's `BFM.mat`: `shapeMU`, `kpt_ind`)."""
  from scipy import io as sio
  try:
    mat = sio.loadmat(path)
  except (OSError, ValueError) as e:
    raise CalibrationError(f'{path}: not a readable .mat file ({e})') from e
  if 'mu_shape' in mat and 'keypoints' in mat:
    shape, kpt = mat['mu_shape'], mat['keypoints']
  elif 'model' in mat:
    model = mat['model']
    shape, kpt = model['shapeMU'][0, 0], model['kpt_ind'][0, 0]
  else:
    raise CalibrationError(f'{path}: neither mu_shape/keypoints (Model_Shape_Sim.mat) nor '
                           'model.shapeMU/kpt_ind (face3d BFM.mat)')
  shape = np.asarray(shape, np.float64).reshape(-1, 3) / 1e4    # micrometres -> centimetres
  kpt = np.asarray(kpt).reshape(-1).astype(np.int64) - 1
  if kpt.shape != (68,) or kpt.min() < 0 or kpt.max() >= len(shape):
    raise CalibrationError(f'{path}: keypoints are not 68 vertex indices of the mean shape')
  return shape, kpt


def calibrate(bfm_shape: np.ndarray, bfm_keypoints: np.ndarray, icp_points: int = 8000,
              seed: int = 0, depth_weight: float = 0.5, surface: str = 'face_region'
              ) -> dict[str, np.ndarray]:
  """BFM-68 points on the ICT surface: {'corners': (68, 3) ICT vertex ids, 'weights': (68, 3),
  'distance': (68,) cm from the mapped BFM point to the surface, 'points': (68, 3) the points
  on ICT's neutral (cm)}.

  `surface`: 'face_region' (the face region of the 'ict' position map: the 'ict' layout's
  points) or 'skin' (ICT's own face, head and neck triangles wherever they lie: the
  'ict_bfm68' layout's points, whose layout is then fitted to them)."""
  if surface not in SURFACES:
    raise ValueError(f'surface {surface!r}: one of {SURFACES}')
  import jax.numpy as jnp

  from prnet_jax.geometry import icp
  model, keep = ict_face.face_model(), ict_face.ict_vertices()
  ict = ict_model.load()
  ict_points = ict.neutral.astype(np.float64)[ict.landmarks]   # ICT's own definitions
  kb = bfm_shape[bfm_keypoints]
  s, r, t = similarity(kb[list(AGREED)], ict_points[list(AGREED)])
  rng = np.random.default_rng(seed)
  src = bfm_shape[rng.choice(len(bfm_shape), min(icp_points, len(bfm_shape)), replace=False)]
  fit = icp.icp(jnp.asarray(src, jnp.float32), jnp.asarray(model.mean, jnp.float32),
                init=icp.Similarity(np.float32(s), r.astype(np.float32), t.astype(np.float32)),
                iterations=40, trim=0.3)
  s, r, t = (np.asarray(x, np.float64) for x in fit.transform)
  mapped = s * kb @ r.T + t
  if surface == 'face_region':
    # Only the face region of the map (what the loss trains and the face mask keeps): the BFM
    # face is wider than ICT's at the jaw's upper ends, whose nearest ICT surface would
    # otherwise be the sideburns at the map's border.
    # Nor the caps that close the eye and mouth openings in the map (not ICT's own triangles):
    # they stretch as the mouth opens, so a point on them is no fixed point of the face.
    own = {tuple(sorted(t)) for t in keep[model.triangles].tolist()} & \
        {tuple(sorted(t)) for t in ict.triangles.tolist()}
    is_own = np.array([tuple(sorted(t)) in own for t in keep[model.triangles].tolist()])
    # ICT's own face region (the model's regions also hold the shipped points: not those).
    regions = fm.regions_from_landmarks(transforms.uv_pixels(model.uv, 256),
                                        np.searchsorted(keep, ict.landmarks))
    vertices, ids = model.mean.astype(np.float64), keep
    face_tris = model.triangles[is_own & (regions[model.triangles] != fm.OTHER).all(1)]
  else:  # ICT's own skin triangles, not cut by any map
    vertices, ids = ict.neutral.astype(np.float64), np.arange(len(ict.neutral))
    skin = np.zeros(len(ict.neutral), bool)
    skin[ict.part('face')] = skin[ict.part('head_and_neck')] = True
    face_tris = ict.triangles[skin[ict.triangles].all(1)]
    # Less the surfaces that turn away from the viewer (eyelid rims, inner lips): they fold in
    # every layout (any layout scales the same spherical unwrap: the same triangles fold).
    areas = ict_face.signed_areas(ict_face.uv_layout(ict), face_tris)
    face_tris = face_tris[np.sign(areas) == np.sign(np.median(areas))]
  # Nearest in a metric that counts depth at `depth_weight`: the BFM jaw's upper ends lie ~2 cm
  # behind ICT's face region, and the plain 3D nearest point there is a tie between boundary
  # points (one side's end jumped 1.3 cm up the cheek); what the 2D benchmark sees is the
  # frontal position.
  scale = np.array([1.0, 1.0, depth_weight])
  tri, weights, _ = closest_points(mapped * scale, vertices * scale, face_tris)
  corners = face_tris[tri]
  points = (weights[:, :, None] * vertices[corners]).sum(1)
  dist = np.linalg.norm(points - mapped, axis=1)
  return {'corners': ids[corners].astype(np.int32), 'weights': weights.astype(np.float32),
          'distance': dist, 'points': points}


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description='Place the BFM-68 landmarks on the ICT face surface.')
  p.add_argument('--bfm', required=True,
                 help="3DDFA's Model_Shape_Sim.mat (or face3d's BFM.mat) with the mean shape")
  p.add_argument('--surface', choices=SURFACES, default='face_region',
                 help="face_region: the 'ict' layout's points; skin: the 'ict_bfm68' layout's")
  p.add_argument('--output', default=None, help='default: the shipped file for --surface')
  a = p.parse_args(argv)
  a.output = a.output or SHIPPED_FOR[a.surface]
  try:
    out = calibrate(*read_bfm_mean(a.bfm), surface=a.surface)
  except (CalibrationError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  np.savez(a.output, corners=out['corners'], weights=out['weights'])
  print(f'wrote {a.output}: 68 points; distance of the mapped BFM points to the ICT surface: '
        f'median {np.median(out["distance"]):.2f} cm, max {out["distance"].max():.2f} cm')
  return 0


if __name__ == '__main__':
  sys.exit(main())
