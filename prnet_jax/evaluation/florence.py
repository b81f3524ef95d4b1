"""Florence (MICC) 3D reconstruction protocol: a model's ICP error on the rendered test views.

The Florence dataset has structured-light scans (`.obj` + `.mtl` + texture) of 53 subjects and
no landmark annotations; the test views and their options (`FlorenceOptions`: poses, crop,
ground-truth radius, ICP settings) are made by `prnet_jax.data.florence_views` when the
dataset is built. Here:

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

import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax.data import image_io, input_pipeline
from prnet_jax.data.florence_views import FlorenceOptions, apply_affine, invert_affine
from prnet_jax.evaluation import alignment
from prnet_jax.faces.uv_assets import UVAssets
from prnet_jax.geometry import icp
from prnet_jax.nn import sharding
from prnet_jax.nn.model import PRNet, inference_fn

OUTER_EYE_CORNERS = (36, 45)  # 0-based iBUG-68 indices
NOSE_TIP = 30


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
  for idx, real in alignment.global_batches(len(order), batch_size):
    mine = alignment.local_rows(idx)
    records = {int(i): source[int(order[i])] for i in set(idx[:real]) | set(mine)}
    local = [input_pipeline.resize_image(image_io.decode_record(records[int(i)]['image']), res)
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
    alignment.progress(done, len(order), start)
  return {k: np.asarray(v) for k, v in rows.items()}
