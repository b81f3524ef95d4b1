r"""Landmarks beyond a layout's face region, read from the face around them.

The 'ict' layout (the bundled model's) trains a face region whose jaw stops short of the
benchmark's: BFM-68's jaw points lie 1-3 cm further out on ICT's skin (beside the ears and
under the jaw line), on map pixels the loss never trains. Each of them is still a fixed
function of the face: over ICT's identities and expressions it is, to a few millimetres, an
affine combination of the face pixels around it. This module fits those combinations:

1. `samples` faces (ICT identities and expressions as the world draws them), each rendered to
   a `resolution`-px map of the layout without taps, and its jaw points (the 'ict_bfm68'
   layout's BFM-68 points on ICT's skin, `landmark_calibration --surface=skin`);
2. per jaw point, the `neighbours` face pixels nearest it in UV, and weights summing to 1 (so
   the combination moves with every rotation, scale and translation of the map) by ridge
   least squares (`ridge`, in cm^2: small weights, so the network's per-pixel errors are not
   amplified).

The other 51 landmarks keep their points. The result, UV points and weights (no BFM
geometry: ICT pixels and numbers), is the layout's `landmark_taps_uv` / `_weights`:

    python -m prnet_jax.faces.landmark_taps      # writes prnet_jax/assets/ict_landmark_taps.npz
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Optional, Sequence

import numpy as np

from prnet_jax.faces import face_model as fm
from prnet_jax.faces import ict_face, ict_model

JAW = tuple(range(17))


@functools.lru_cache(maxsize=None)
def _skin_corners() -> tuple[np.ndarray, np.ndarray]:
  """The BFM-68 points on ICT's skin: (68, 3) ICT vertices and barycentric weights."""
  with np.load(ict_face.LANDMARK_POINTS_SKIN) as d:
    return d['corners'].astype(np.int64), d['weights'].astype(np.float64)


def skin_points(vertices: np.ndarray) -> np.ndarray:
  """(..., V, 3) full ICT vertices -> (..., 68, 3) the BFM-68 points on ICT's skin."""
  corners, weights = _skin_corners()
  return (weights[:, :, None] * vertices[..., corners, :]).sum(-2)


def affine_ridge(x: np.ndarray, t: np.ndarray, ridge: float) -> np.ndarray:
  """min |x a - t|^2 + ridge |a|^2 subject to sum(a) = 1: x (M, K), t (M,) -> a (K,)."""
  k = x.shape[1]
  lhs = np.block([[2 * (x.T @ x + ridge * np.eye(k)), np.ones((k, 1))],
                  [np.ones((1, k)), np.zeros((1, 1))]])
  return np.linalg.solve(lhs, np.concatenate([2 * x.T @ t, [1.0]]))[:k]


def fit(layout: str = 'ict', resolution: int = 64, samples: int = 400, neighbours: int = 96,
        ridge: float = 30.0, seed: int = 0, landmarks: Sequence[int] = JAW,
        held_out: int = 0) -> dict[str, np.ndarray]:
  """The layout's landmark taps: {'uv': (68, T, 2) UV points ([0, 1], v up), 'weights':
  (68, T)}, plus 'residual' (len(landmarks),) the mean distance (cm) of each fitted point to
  its skin point on `held_out` further faces (NaN without)."""
  ict = ict_model.load()
  model = ict_face.face_model(layout, taps=False)
  keep = ict_face.ict_vertices(layout)
  assets = fm.derive_uv_assets(model, resolution)
  renderer = model.uv_renderer(resolution)
  rng = np.random.default_rng(seed)
  maps, targets = [], []
  for _ in range(samples + held_out):
    v = ict.vertices(ict_face.sample_identity(rng), ict_face.sample_expression(rng))
    maps.append(np.asarray(renderer(np.asarray(v[keep], np.float32)), np.float64).reshape(-1, 3))
    targets.append(skin_points(np.asarray(v, np.float64)))
  maps, targets = np.stack(maps), np.stack(targets)
  face = assets.face_indices
  face_px = np.stack([face % resolution, face // resolution], 1).astype(np.float64)
  # Where each skin point lies in this layout's map.
  corners, weights = _skin_corners()
  point_px = ((weights[:, :, None] * ict_face.layout_pixels(layout)[corners]).sum(1)
              * (resolution - 1) / 255.0)
  own = np.clip(assets.kpt_uv_subpixel.astype(np.float64), 0, resolution - 1)
  uv = np.repeat(own[:, None, :], neighbours, 1)
  tap_weights = np.zeros((68, neighbours))
  tap_weights[:, 0] = 1.0
  residual = []
  for j in landmarks:
    near = np.argsort(np.linalg.norm(face_px - point_px[j], axis=1), kind='stable')[:neighbours]
    x = maps[:samples, face[near], :].transpose(0, 2, 1).reshape(-1, neighbours)
    a = affine_ridge(x, targets[:samples, j, :].reshape(-1), ridge)
    uv[j], tap_weights[j] = face_px[near], a
    if held_out:
      got = np.einsum('nkc,k->nc', maps[samples:, face[near], :], a)
      residual.append(np.linalg.norm(got - targets[samples:, j], axis=1).mean())
  uv = np.stack([uv[..., 0] / (resolution - 1), 1 - uv[..., 1] / (resolution - 1)], -1)
  return {'uv': uv.astype(np.float32), 'weights': tap_weights.astype(np.float32),
          'residual': np.asarray(residual if held_out else [np.nan] * len(landmarks))}


def readout_on(layout: str, vertices: np.ndarray, resolution: int = 64) -> np.ndarray:
  """(68, 3) the layout's landmarks as its UV assets read them from the map of `vertices`
  ((V', 3) of `face_model(layout)`)."""
  from prnet_jax.faces.catalog import uv_assets_for
  model = ict_face.face_model(layout)
  pos = np.asarray(model.uv_renderer(resolution)(np.asarray(vertices, np.float32)), np.float64)
  return np.asarray(uv_assets_for(layout, resolution).landmarks(pos), np.float64)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description="Fit the 'ict' layout's landmark taps.")
  p.add_argument('--output', default=ict_face.LANDMARK_TAPS['ict'])
  p.add_argument('--samples', type=int, default=400)
  p.add_argument('--neighbours', type=int, default=96)
  p.add_argument('--ridge', type=float, default=30.0)
  a = p.parse_args(argv)
  try:
    out = fit('ict', samples=a.samples, neighbours=a.neighbours, ridge=a.ridge, held_out=100)
  except (ict_model.ICTModelError, OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  np.savez(a.output, uv=out['uv'], weights=out['weights'])
  print(f'wrote {a.output}: jaw points 0-16 from {a.neighbours} face pixels each; distance '
        f'to the skin points on 100 held-out faces: mean {np.mean(out["residual"]):.3f} cm, '
        f'max {np.max(out["residual"]):.3f} cm')
  return 0


if __name__ == '__main__':
  sys.exit(main())
