"""Florence (MICC) 3D reconstruction protocol: scans, rendered test views, ICP error.

The Florence dataset has structured-light scans (`.obj` + `.mtl` + texture) of 53 subjects and
no landmark annotations; the exact poses and crop used by the paper are not published, so they
are options here (`FlorenceOptions`) with these defaults:

* views: yaw -80..80 deg in 20 deg steps x pitch -15, 20, 25 deg (27 per subject, the VRN
  protocol as its authors describe it; the head is pitched about its own x axis, then turned),
  orthographic, rendered with the scan's texture on a mid-grey background by our rasteriser;
* the scan's frontal frame is y up, z towards the viewer (MICC's); its nose tip is the most
  forward vertex within 50 mm (in x, y) of the median vertex;
* each view is cropped like the official landmark crop: centre = the nose tip moved by
  `centre_offset_mm` (the mean of the 68 landmarks relative to the nose tip on the embedded face
  model), side `crop_mm` (~1.6 x a face's landmark box), resized to `image_size`;
* ground truth: the scan vertices within `radius_mm` = 95 mm of the nose tip (at most
  `max_points`, a seeded subset);
* error: the predicted dense face is mapped back through the known view transform, moved so its
  nose-tip landmark meets the scan's, cropped to the same radius around that landmark, and
  aligned to the ground truth by rigid ICP (rotation and translation, as VRN's protocol: a
  prediction of the wrong size must score worse; `icp_scale=True` fits a scale too), iterated
  until an update moves no point by more than `icp_tol_mm` (at most `icp_iterations`);
  the mean distance from each ground-truth point to the nearest aligned predicted vertex, in
  millimetres (`error_mm`; the scans are metric), and divided by an outer interocular distance
  (`nme`). VRN normalises by the ground truth's outer interocular distance; the Florence scans
  carry no landmarks, so here it is that of the aligned prediction (landmarks 37 and 46,
  1-based), which rigid ICP leaves at the predicted size: compare `error_mm` across methods.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax import data_io, evaluator, geometry, icp, input_pipeline, mesh_io, render, sharding
from prnet_jax.mesh_io import Scan
from prnet_jax.model import PRNet, inference_fn
from prnet_jax.uv_assets import UVAssets

OUTER_EYE_CORNERS = (36, 45)  # 0-based iBUG-68 indices
NOSE_TIP = 30


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


# Scans are read and written by prnet_jax.mesh_io (re-exported here).
load_obj, write_obj = mesh_io.load_obj, mesh_io.write_obj


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
  r = (geometry.angles_to_matrix(np.deg2rad([0.0, yaw_deg, 0.0]))
       @ geometry.angles_to_matrix(np.deg2rad([pitch_deg, 0.0, 0.0])))
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


# -------------------------------------------------------------------------------- the error

def reconstruction_error(pred_vertices: np.ndarray, pred_landmarks: np.ndarray,
                         gt_points: np.ndarray, nose: np.ndarray, transform: np.ndarray,
                         opts: FlorenceOptions = FlorenceOptions()) -> dict[str, float]:
  """Florence NME of one prediction.

  Args:
    pred_vertices: (N, 3) predicted face vertices in crop pixels (position map's face pixels).
    pred_landmarks: (68, 3) predicted landmarks, same frame.
    gt_points: (M, 3) ground-truth scan points (mm); nose: (3,) the scan's nose tip (mm).
    transform: (3, 4) the view's scan -> crop affine.
  Returns:
    nme (error / outer interocular distance), error_mm, interocular_mm, scale (of the ICP
    similarity), icp_rms_mm (over the ICP subset, last iteration).
  """
  back = invert_affine(transform)
  pred = apply_affine(back, pred_vertices)
  lms = apply_affine(back, pred_landmarks)
  shift = np.asarray(nose, np.float64) - lms[NOSE_TIP]
  init = icp.Similarity(np.float32(1), np.eye(3, dtype=np.float32), shift.astype(np.float32))
  # ICP uses the predicted points within the crop radius of the predicted nose tip, so that
  # the prediction and the ground truth cover the same part of the face.
  near = pred[np.linalg.norm(pred - lms[NOSE_TIP], axis=1) <= opts.radius_mm]
  near = near if len(near) >= 3 else pred
  # Fixed sizes (evenly spaced picks; ground truth padded with far points that are never
  # nearest and are left out of the mean), so ICP compiles once for every scan and view.
  picks = np.round(np.linspace(0, len(near) - 1, opts.icp_points)).astype(np.int64)
  gt = np.asarray(gt_points, np.float32)
  m = len(gt)
  size = max(opts.max_points, m)
  padded = np.concatenate([gt, np.full((size - m, 3), 1e6, np.float32)])
  fit = icp.icp(near[picks].astype(np.float32), padded, init,
                iterations=opts.icp_iterations, with_scale=opts.icp_scale, tol=opts.icp_tol_mm)
  tf = fit.transform
  aligned = np.asarray(tf.apply(jnp.asarray(pred, jnp.float32)))
  lms = np.asarray(tf.apply(jnp.asarray(lms, jnp.float32)))
  out = aligned_error(aligned, lms, padded, m)
  done = int(fit.iterations)
  return {**out, 'scale': float(tf.scale), 'icp_rms_mm': float(fit.rms[done - 1]),
          'icp_iterations': done}


def aligned_error(aligned: np.ndarray, landmarks: np.ndarray, gt_points: np.ndarray,
                  count: Optional[int] = None) -> dict[str, float]:
  """NME of an already aligned prediction: mean distance from each of the first `count`
  ground-truth points to its nearest predicted vertex / outer interocular distance."""
  count = len(gt_points) if count is None else count
  _, dist = icp.nearest_neighbors(jnp.asarray(gt_points, jnp.float32),
                                  jnp.asarray(aligned, jnp.float32))
  error = float(np.mean(np.asarray(dist, np.float64)[:count]))
  eyes = np.asarray(landmarks, np.float64)[list(OUTER_EYE_CORNERS)]
  iod = float(np.linalg.norm(eyes[0] - eyes[1]))
  return {'nme': error / iod, 'error_mm': error, 'interocular_mm': iod}


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


# ------------------------------------------------------------------------ over a dataset

def evaluate_views(model: PRNet, variables, assets: UVAssets, mesh: jax.sharding.Mesh, source,
                   order: np.ndarray, batch_size: int,
                   opts: FlorenceOptions = FlorenceOptions()) -> dict[str, np.ndarray]:
  """Per-view reconstruction errors (`reconstruction_error`) of a model over the rendered views
  of a `florence` dataset: the forward pass jitted over `mesh`, ICP per view on the host."""
  data_sharding = sharding.batch_sharding(mesh)
  prepare, forward = inference_fn(model)
  variables = prepare(variables)
  forward = jax.jit(forward, out_shardings=sharding.replicated(mesh))
  res = model.resolution
  rows: dict[str, list] = {k: [] for k in ('nme', 'error_mm', 'interocular_mm', 'scale',
                                           'landmarks')}
  start, done = time.time(), 0
  for idx, real in evaluator.global_batches(len(order), batch_size):
    mine = evaluator.local_rows(idx)
    records = {int(i): source[int(order[i])] for i in set(idx[:real]) | set(mine)}
    local = [input_pipeline.resize_image(data_io.decode_image(records[int(i)]['image']), res)
             for i in mine]
    images = jax.make_array_from_process_local_data(data_sharding, np.stack(local))
    maps = np.asarray(jax.device_get(forward(variables, images)))[:real]
    for j, pos in enumerate(maps):
      rec = records[int(idx[j])]
      k = res / opts.image_size  # the view transform is for the rendered size
      t = np.asarray(rec['view_transform'], np.float64) * k
      r = reconstruction_error(assets.vertices(pos), assets.landmarks(pos), rec['gt_points'],
                               rec['nose_tip'], t, opts)
      for name in rows:
        rows[name].append(assets.landmarks(pos) / k if name == 'landmarks' else r[name])
    done += real
    evaluator.progress(done, len(order), start)
  return {k: np.asarray(v) for k, v in rows.items()}
