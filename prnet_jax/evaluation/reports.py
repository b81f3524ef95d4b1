"""Evaluation reports: summary numbers, a Markdown table laid out like the paper's, CED plots and
example grids (best, median and worst faces with ground-truth landmarks green, ours red).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from prnet_jax.data import image_io, input_pipeline
from prnet_jax.evaluation import metrics

# The paper's PRNet numbers on AFLW2000-3D and Florence (percent NME), for the tables.
PAPER = {'bucket0': 2.75, 'bucket1': 3.51, 'bucket2': 4.61, 'bucket_mean': 3.62,
         'nme_2d': 3.26, 'nme_3d': 4.70, 'dense_2d': 3.17, 'dense_3d': 4.40,
         'florence': 3.7551}
ALIGNMENT_METRICS = ('nme_2d', 'nme_3d', 'dense_2d', 'dense_3d')


# ------------------------------------------------------------------------------- summaries

def summarize(per_example: dict[str, np.ndarray], buckets: np.ndarray,
              auc_threshold: float) -> dict[str, Any]:
  """Bucket means, their mean, all-image means, AUC and CED. The CED's thresholds run from 0
  to 10% NME, or further (in 5% steps) to cover 99% of the images of every metric."""
  p99 = max([float(np.nanpercentile(e, 99)) for e in per_example.values() if len(e)] + [0.0])
  top = max(0.1, float(np.ceil(p99 * 20) / 20)) if np.isfinite(p99) else 0.1
  thresholds = np.linspace(0, top, 201)
  out = {}
  for name, errors in per_example.items():
    s = metrics.bucket_summary(errors, buckets)
    s['auc'] = metrics.auc(errors, auc_threshold)
    s['median'] = float(np.median(errors))
    s['ced'] = {'thresholds': thresholds.tolist(),
                'fraction': metrics.ced(errors, thresholds).tolist()}
    out[name] = s
  return out


def _pct(x: float) -> str:
  return '—' if x is None or not np.isfinite(x) else f'{100 * x:.2f}'


def markdown_table(name: str, summary: dict[str, Any], info: dict[str, Any]) -> str:
  """A Markdown report laid out like the paper's tables (percent NME, PRNet's beside ours)."""
  lines = [f'# Evaluation: {name}', '',
           f'checkpoint: `{info["checkpoint"]}` (step {info["step"]}); {info["count"]} images; '
           f'normaliser `{info["options"]["norm"]}`, 3D z alignment '
           f'`{info["options"]["z_align"]}`.', '']
  if 'florence' in summary:
    s = summary['florence']
    lines += ['| Florence | ours | PRNet (paper) |', '|---|---|---|',
              f'| reconstruction NME, all views | {_pct(s["all"])} | {PAPER["florence"]:.4f}* |',
              f'| mean error (mm), all views | {s.get("error_mm", float("nan")):.2f} | |']
    for b, label in enumerate(metrics.BUCKET_NAMES):
      lines.append(f'| abs(yaw) {label} ({s[f"bucket{b}_count"]} views) | '
                   f'{_pct(s[f"bucket{b}"])} | |')
    lines += ['', '\\* not comparable: the paper\'s views, crop and normaliser are not '
              'published (ours: prnet_jax.evaluation.florence); compare the error in millimetres.']
    return '\n'.join(lines) + '\n'
  ref = '' if name.startswith('aflw2000_3d') else (
      '\nPaper numbers are on AFLW2000-3D, shown for scale: this dataset is different.\n')
  # The paper's numbers are comparable only where its protocol is known to be ours: 2D NME with
  # the landmark-box normaliser. Its 3D and dense normalisers are not published.
  same_2d = info['options'].get('norm') == 'box'
  paper = lambda key, same: f'{PAPER[key]:.2f}' + ('' if same else '*')
  s2 = summary['nme_2d']
  lines += ['| AFLW2000-3D protocol, 68 landmarks 2D | ours | PRNet (paper) |', '|---|---|---|']
  for b, label in enumerate(metrics.BUCKET_NAMES):
    lines.append(f'| abs(yaw) {label} ({s2[f"bucket{b}_count"]} images) | {_pct(s2[f"bucket{b}"])}'
                 f' | {paper(f"bucket{b}", same_2d)} |')
  lines.append(f'| mean of the bucket means | {_pct(s2["bucket_mean"])} | '
               f'{paper("bucket_mean", same_2d)} |')
  lines += ['', '| all images | 2D | 3D | PRNet 2D | PRNet 3D |', '|---|---|---|---|---|',
            f'| 68 landmarks | {_pct(s2["all"])} | {_pct(summary["nme_3d"]["all"])} | '
            f'{paper("nme_2d", same_2d)} | {paper("nme_3d", False)} |']
  if 'dense_2d' in summary:
    lines.append(f'| dense (face pixels) | {_pct(summary["dense_2d"]["all"])} | '
                 f'{_pct(summary["dense_3d"]["all"])} | {paper("dense_2d", False)} | '
                 f'{paper("dense_3d", False)} |')
  lines += ['', '\\* not comparable: the paper does not publish its 3D and dense normalisers'
            + ('' if same_2d else ', and this report uses another 2D normaliser') +
            f' (ours: 2D `{info["options"].get("norm")}`, dense '
            f'`{info["options"].get("dense_norm", "box")}`, 3D z alignment '
            f'`{info["options"].get("z_align")}`; see prnet_jax.evaluation.metrics).']
  lines += ['', f'| AUC of the CED at {100 * info["options"]["auc_threshold"]:.0f}% | value |',
            '|---|---|']
  lines += [f'| {m} | {summary[m]["auc"]:.4f} |' for m in ALIGNMENT_METRICS if m in summary]
  return '\n'.join(lines) + ref + '\n'


# ------------------------------------------------------------------------------- pictures

def plot_ced(path: str, summary: dict[str, Any], title: str) -> None:
  # A bare Figure (no pyplot): works headless and leaves a notebook's backend alone.
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 4.5), dpi=100)
  ax = fig.subplots()
  for name, s in summary.items():
    t = 100 * np.asarray(s['ced']['thresholds'])
    ax.plot(t, 100 * np.asarray(s['ced']['fraction']),
            label=f'{name} (mean {_pct(s["all"])}%)')
  ax.set_xlabel('NME (%)')
  ax.set_ylabel('images (%)')
  ax.set_xlim(0, t[-1])
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.set_title(title)
  ax.legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(path)


def example_grid(images: list[np.ndarray], gts: list[np.ndarray], preds: list[np.ndarray],
                 captions: list[str], columns: int = 4):
  """A PIL grid: each face with ground-truth (green) and predicted (red) landmarks."""
  from PIL import Image, ImageDraw
  s = max(images[0].shape[0], 128)
  rows = -(-len(images) // columns)
  sheet = Image.new('RGB', (columns * s, rows * s), (255, 255, 255))
  for i, (im, gt, pr, cap) in enumerate(zip(images, gts, preds, captions)):
    k = s / im.shape[0]
    tile = Image.fromarray(im).resize((s, s), Image.BILINEAR)
    d = ImageDraw.Draw(tile)
    for pts, colour in ((gt, (0, 255, 0)), (pr, (255, 40, 40))):
      for x, y in np.asarray(pts)[:, :2] * k:
        d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=colour)
    d.text((3, 3), cap, fill=(255, 255, 0))
    sheet.paste(tile, ((i % columns) * s, (i // columns) * s))
  return sheet


def pick_examples(errors: np.ndarray, per_group: int = 4) -> list[tuple[str, int]]:
  """Indices of the best, median and worst `per_group` examples by error."""
  order = np.argsort(errors, kind='stable')
  n = len(order)
  mid = max(0, n // 2 - per_group // 2)
  groups = [('best', order[:per_group]), ('median', order[mid:mid + per_group]),
            ('worst', order[::-1][:per_group])]
  return [(label, int(i)) for label, ids in groups for i in ids]


# ------------------------------------------------------------------------------- files

def write_report(report: dict[str, Any], pred_landmarks: np.ndarray, source, order: np.ndarray,
                 resolution: int, out_dir: str, name: str, is_florence: bool) -> None:
  """Writes OUT_DIR/NAME.json, .md, _ced.png and _examples.png (process 0 calls it)."""
  os.makedirs(out_dir, exist_ok=True)
  base = os.path.join(out_dir, name)
  with open(base + '.json', 'w') as f:
    json.dump(report, f, indent=1)
  table = markdown_table(report['dataset'], report['summary'], report)
  with open(base + '.md', 'w') as f:
    f.write(table)
  plot_ced(base + '_ced.png', report['summary'], f'{report["dataset"]} ({report["count"]} images)')
  key = 'florence' if is_florence else 'nme_2d'
  errors = np.asarray(report['per_example'][key])
  picks = pick_examples(errors, per_group=4)
  decode = input_pipeline.DecodeExample(resolution)
  images, gts, preds, captions = [], [], [], []
  for label, i in picks:
    rec = source[int(order[i])]
    if is_florence:
      image = image_io.decode_record(rec['image'])
      gt = np.zeros((0, 2))
      pred = pred_landmarks[i]
    else:
      d = decode.map(rec)
      image, gt, pred = d['image'], d['landmarks'], pred_landmarks[i]
    images.append(image)
    gts.append(gt)
    preds.append(pred)
    captions.append(f'{label} {100 * errors[i]:.2f}%')
  example_grid(images, gts, preds, captions).save(base + '_examples.png')
  print(table)
  print(f'wrote {base}.json, .md, _ced.png, _examples.png', flush=True)
