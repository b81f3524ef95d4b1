"""Error analysis of 68-point landmarks on real faces: where a model's error comes from.

Pure functions over arrays (host side, NumPy): per-face 2D NME (the paper's protocol: box
normaliser sqrt(w * h) of the ground truth's 2D box), its means by |yaw|, |pitch| and |roll|
bucket, by landmark group (jaw, brows, nose, eyes, mouth), and the systematic part of the error:
each landmark's mean signed offset in the box frame (image axes, x right, y down, in units of
the box size). A model that is right on average but noisy has offsets near 0; one that learned
another landmark definition has large offsets on the same points in every face.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from prnet_jax.evaluation import metrics

# The 68-point (Multi-PIE / 300W) groups, 0-based.
GROUPS = {'jaw': range(0, 17), 'brows': range(17, 27), 'nose': range(27, 36),
          'eyes': range(36, 48), 'mouth': range(48, 68)}
# |angle| bucket edges in degrees: yaw as the AFLW2000-3D protocol, pitch and roll finer (real
# faces rarely pass 30 degrees of pitch or roll).
EDGES = {'yaw': (30.0, 60.0), 'pitch': (15.0, 30.0), 'roll': (15.0, 30.0)}


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  if pred.ndim != 3 or pred.shape[1:2] != (68,) or pred.shape[-1] < 2 or gt.shape[:2] != \
      pred.shape[:2] or gt.shape[-1] < 2:
    raise ValueError(f'expected (N, 68, 2+) predictions and ground truth; got {pred.shape} and '
                     f'{gt.shape}')
  return pred[..., :2], gt[..., :2]


def box_size(gt: np.ndarray) -> np.ndarray:
  """(N, 68, 2+) -> (N,) sqrt(w * h) of each face's 2D ground-truth box (``metrics.bbox_size``)."""
  return np.asarray(metrics.bbox_size(np.asarray(gt, np.float64)[..., :2]), np.float64)


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """(N, 68) 2D distance of each landmark over its face's box size."""
  pred, gt = _check(pred, gt)
  return np.linalg.norm(pred - gt, axis=-1) / box_size(gt)[:, None]


def offsets(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """(N, 68, 2) signed error (pred - gt) of each landmark over its face's box size."""
  pred, gt = _check(pred, gt)
  return (pred - gt) / box_size(gt)[:, None, None]


def angle_bucket(angles_deg: np.ndarray, edges: Sequence[float]) -> np.ndarray:
  """|angle| bucket: 0 = [0, e0], 1 = (e0, e1], 2 = above e1 (int32)."""
  a = np.abs(np.asarray(angles_deg, np.float64))
  return np.searchsorted(np.asarray(edges, np.float64), a, side='left').astype(np.int32)


def bucket_label(edges: Sequence[float], b: int) -> str:
  lo = [0.0, *edges][b]
  return f'[0, {edges[0]:g}]' if b == 0 else (f'({lo:g}, {edges[b]:g}]' if b < len(edges)
                                              else f'> {lo:g}')


def analyse(pred: np.ndarray, gt: np.ndarray, angles_deg: np.ndarray,
            names: Sequence[str], worst: int = 24) -> dict[str, Any]:
  """The error analysis of N faces.

  Args:
    pred, gt: (N, 68, 2+) predicted and ground-truth landmarks in image pixels.
    angles_deg: (N, 3) pitch, yaw, roll in degrees (AFLW2000-3D's Pose_Para order).
    names: N file names.
    worst: how many of the worst faces to list.

  Returns: {'count', 'mean', 'median', 'per_file': [{file, nme, pitch, yaw, roll}],
  'by_angle': {axis: [{bucket, count, nme}]}, 'by_group': {group: nme},
  'offsets': (68, 2) mean signed offset, 'offset_nme': the NME that the mean offsets alone
  explain, 'worst': [indices]}.
  """
  errors = point_errors(pred, gt)                                  # (N, 68)
  per_face = errors.mean(1)
  angles = np.asarray(angles_deg, np.float64).reshape(len(per_face), 3)
  if len(names) != len(per_face):
    raise ValueError(f'{len(names)} names for {len(per_face)} faces')
  by_angle = {}
  for k, axis in enumerate(('pitch', 'yaw', 'roll')):
    edges = EDGES[axis]
    buckets = angle_bucket(angles[:, k], edges)
    by_angle[axis] = [{'bucket': bucket_label(edges, b), 'count': int(np.sum(buckets == b)),
                       'nme': float(per_face[buckets == b].mean()) if np.any(buckets == b)
                       else float('nan')} for b in range(len(edges) + 1)]
  mean_offset = offsets(pred, gt).mean(0)                          # (68, 2)
  order = np.argsort(-per_face, kind='stable')
  return {
      'count': int(len(per_face)),
      'mean': float(per_face.mean()),
      'median': float(np.median(per_face)),
      'per_file': [{'file': n, 'nme': float(e), 'pitch': float(a[0]), 'yaw': float(a[1]),
                    'roll': float(a[2])} for n, e, a in zip(names, per_face, angles)],
      'by_angle': by_angle,
      'by_group': {g: float(errors[:, list(idx)].mean()) for g, idx in GROUPS.items()},
      'offsets': mean_offset.tolist(),
      'offset_nme': float(np.linalg.norm(mean_offset, axis=-1).mean()),
      'worst': [int(i) for i in order[:worst]],
  }


def markdown(analysis: dict[str, Any], title: str) -> str:
  """The analysis as Markdown tables (percent NME)."""
  pct = lambda x: '—' if not np.isfinite(x) else f'{100 * x:.2f}'
  lines = [f'# {title}', '',
           f'{analysis["count"]} faces; 2D NME (68 points, box normaliser): mean '
           f'**{pct(analysis["mean"])}%**, median {pct(analysis["median"])}%.', '',
           '| angle | bucket | faces | 2D NME % |', '|---|---|---|---|']
  for axis, rows in analysis['by_angle'].items():
    lines += [f'| {axis} | {r["bucket"]} | {r["count"]} | {pct(r["nme"])} |' for r in rows]
  lines += ['', '| landmark group | 2D NME % |', '|---|---|']
  lines += [f'| {g} | {pct(e)} |' for g, e in analysis['by_group'].items()]
  off = np.asarray(analysis['offsets'])
  size = np.linalg.norm(off, axis=-1)
  lines += ['', f'Systematic offsets (mean signed error per landmark, % of the box size; their '
            f'lengths average {pct(analysis["offset_nme"])}%, the part of the NME that one fixed '
            'correction could remove). Largest:', '',
            '| landmark | group | dx % | dy % | length % |', '|---|---|---|---|---|']
  group_of = {i: g for g, idx in GROUPS.items() for i in idx}
  for i in np.argsort(-size, kind='stable')[:12]:
    lines.append(f'| {i} | {group_of[int(i)]} | {pct(off[i, 0])} | {pct(off[i, 1])} | '
                 f'{pct(size[i])} |')
  lines += ['', '| worst faces | 2D NME % | yaw | pitch | roll |', '|---|---|---|---|---|']
  for i in analysis['worst']:
    r = analysis['per_file'][i]
    lines.append(f'| {r["file"]} | {pct(r["nme"])} | {r["yaw"]:.0f} | {r["pitch"]:.0f} | '
                 f'{r["roll"]:.0f} |')
  return '\n'.join(lines) + '\n'
