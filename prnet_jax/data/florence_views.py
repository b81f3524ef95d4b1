"""Florence (MICC) test views: scans rendered at the protocol's poses and crops, with their
ground-truth points (what the `florence` dataset builder records; the evaluation of a model on
them is `prnet_jax.evaluation.florence`).

The exact poses and crop used by the paper are not published, so they are options
(`FlorenceOptions`) with these defaults:

* views: yaw -80..80 deg in 20 deg steps x pitch -15, 20, 25 deg (27 per subject, the VRN
  protocol as its authors describe it; the head is pitched about its own x axis, then turned),
  orthographic, rendered with the scan's texture on a mid-grey background by our rasteriser;
* the scan's frontal frame is y up, z towards the viewer (MICC's); its nose tip is the most
  forward vertex within 50 mm (in x, y) of the median vertex;
* each view is cropped like the official landmark crop: centre = the nose tip moved by
  `centre_offset_mm` (the mean of the 68 landmarks relative to the nose tip on the embedded face
  model), side `crop_mm` (~1.6 x a face's landmark box), resized to `image_size`;
* ground truth: the scan vertices within `radius_mm` = 95 mm of the nose tip (at most
  `max_points`, a seeded subset).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

from prnet_jax.data.mesh_io import Scan
from prnet_jax.geometry import render, transforms


@dataclasses.dataclass(frozen=True)
class FlorenceOptions:
  yaws_deg: tuple[float, ...] = (-80, -60, -40, -20, 0, 20, 40, 60, 80)
  pitches_deg: tuple[float, ...] = (-15, 20, 25)
  image_size: int = 256
  crop_mm: float = 220.0
  centre_offset_mm: tuple[float, float, float] = (0.0, 7.0, -39.0)
  radius_mm: float = 95.0
  max_points: int = 30000
  background: float = 0.5
  icp_points: int = 3000       # predicted vertices used by ICP (all are used for the error)
  icp_iterations: int = 300    # the most ICP updates; it stops earlier once converged:
  icp_tol_mm: float = 1e-3     # when an update moves no point by more than this
  icp_scale: bool = False      # rigid: a prediction of the wrong size must score worse


# -------------------------------------------------------------------------------- test views

def nose_tip(vertices: np.ndarray) -> np.ndarray:
  """The most forward (max z) vertex within 50 mm in x, y of the median vertex (frontal frame)."""
  v = np.asarray(vertices, np.float64)
  near = np.linalg.norm(v[:, :2] - np.median(v[:, :2], 0), axis=1) < 50.0
  pool = v[near] if near.any() else v
  return pool[np.argmax(pool[:, 2])]


def view_transform(nose: np.ndarray, yaw_deg: float, pitch_deg: float,
                   opts: FlorenceOptions) -> np.ndarray:
  """(3, 4) affine: scan millimetres -> crop pixels (x right, y down, z towards the viewer)."""
  # Nod (pitch about the head's own x axis), then turn (yaw about the vertical).
  r = (transforms.angles_to_matrix(np.deg2rad([0.0, yaw_deg, 0.0]))
       @ transforms.angles_to_matrix(np.deg2rad([pitch_deg, 0.0, 0.0])))
  k = opts.image_size / opts.crop_mm
  centre = np.asarray(nose, np.float64) + np.asarray(opts.centre_offset_mm, np.float64)
  flip = np.diag([k, -k, k])
  a = flip @ r
  half = (opts.image_size - 1) / 2.0
  return np.concatenate([a, (np.array([half, half, 0.0]) - a @ centre)[:, None]], 1)


def apply_affine(a: np.ndarray, points) -> np.ndarray:
  return np.asarray(points, np.float64) @ np.asarray(a, np.float64)[:, :3].T + a[:, 3]


def invert_affine(a: np.ndarray) -> np.ndarray:
  inv = np.linalg.inv(np.asarray(a, np.float64)[:, :3])
  return np.concatenate([inv, -(inv @ a[:, 3])[:, None]], 1)


def render_view(scan: Scan, transform: np.ndarray, opts: FlorenceOptions) -> np.ndarray:
  """(S, S, 3) uint8 image of the textured scan under `transform`."""
  s = opts.image_size
  verts = apply_affine(transform, scan.vertices).astype(np.float32)
  image, _ = render.render(verts, scan.triangles, scan.colors, s, s,
                           background=opts.background)
  return np.clip(np.round(np.asarray(image) * 255), 0, 255).astype(np.uint8)


def ground_truth_points(scan: Scan, nose: np.ndarray, opts: FlorenceOptions) -> np.ndarray:
  """(M, 3) float32 scan vertices within radius_mm of the nose tip (a seeded subset if many)."""
  v = scan.vertices
  pts = v[np.linalg.norm(v - nose, axis=1) <= opts.radius_mm]
  if len(pts) > opts.max_points:
    keep = np.sort(np.random.default_rng(0).permutation(len(pts))[:opts.max_points])
    pts = pts[keep]
  return pts.astype(np.float32)


# ----------------------------------------------------------------------- options of a build

def options_to_metadata(opts: FlorenceOptions) -> dict[str, Any]:
  """JSON-able options, stored in a built dataset's metadata (``DatasetInfo.metadata``)."""
  return {'florence_options': dataclasses.asdict(opts)}


def options_from_metadata(metadata: Optional[Mapping[str, Any]]) -> FlorenceOptions:
  """The FlorenceOptions a build recorded; the defaults where it recorded none (the fields
  evaluation uses, crop size, radius and ICP settings, are the same in every build config)."""
  stored = dict((metadata or {}).get('florence_options') or {})
  fields = {f.name: f for f in dataclasses.fields(FlorenceOptions)}
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in fields}
  return FlorenceOptions(**kwargs)
