"""Evaluation: the paper's protocols over a dataset, as JSON, a Markdown table and plots.

    python launch.py --config=configs/prnet.py:small --workdir=workdirs/small --mode=eval
    evaluate.evaluate(config, workdir)              # the same from Python / Colab

Datasets: `aflw2000_3d` (68-landmark NME 2D/3D by |yaw| bucket, dense NME when the build had
BFM), `synthetic_faces[/config]` (the same; dense maps always present) and `florence` (3D
reconstruction error after ICP, `prnet_jax.florence`). The model runs jitted over a mesh of all
devices; every process decodes its rows of each global batch, the last batch is padded (and the
padding dropped), metrics are computed on the device (`prnet_jax.metrics`).

Writes WORKDIR/eval/<name>.json (every number, per-example values, options, checkpoint step),
<name>.md (a table laid out like the paper's, its PRNet numbers beside ours), <name>_ced.png and
<name>_examples.png (best / median / worst faces, ground-truth landmarks green, ours red).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from prnet_jax import checkpointing, data_io, input_pipeline, losses, metrics
from prnet_jax.model import (ModelConfig, PRNet, init_variables,
                             prepare_for_inference)
from prnet_jax.uv_assets import UVAssets

# The paper's PRNet numbers on AFLW2000-3D and Florence (percent NME), for the tables.
PAPER = {'bucket0': 2.75, 'bucket1': 3.51, 'bucket2': 4.61, 'bucket_mean': 3.62,
         'nme_2d': 3.26, 'nme_3d': 4.70, 'dense_2d': 3.17, 'dense_3d': 4.40,
         'florence': 3.7551}
ALIGNMENT_METRICS = ('nme_2d', 'nme_3d', 'dense_2d', 'dense_3d')


class EvaluationError(RuntimeError):
  pass


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  norm: str = 'box'             # metrics.NORMALIZERS
  z_align: str = 'mean'         # metrics.Z_ALIGNS (3D metrics)
  auc_threshold: float = 0.07   # AUC of the CED up to 7% NME
  batch_size: int = 16          # global
  max_examples: int = 0         # 0: all

  @classmethod
  def from_config(cls, c) -> 'EvalOptions':
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(c).items() if k in fields})


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


# --------------------------------------------------------------------------- jitted metrics

def alignment_metrics(pred_maps: jax.Array, batch: dict[str, jax.Array], assets: UVAssets,
                      opts: EvalOptions, dense: bool) -> dict[str, jax.Array]:
  """Per-example metrics of predicted position maps (B, R, R, 3) against a batch's ground truth
  ('landmarks' (B, 68, 3), 'position_map' (B, R, R, 3) when `dense`)."""
  gt = batch['landmarks']
  pred = assets.landmarks(pred_maps)
  out = {'nme_2d': metrics.nme(pred, gt, 2, opts.norm),
         'nme_3d': metrics.nme(pred, gt, 3, opts.norm, opts.z_align),
         'landmarks': pred}
  if dense:
    mask = jnp.asarray(assets.face_mask)
    out['dense_2d'] = metrics.dense_nme(pred_maps, batch['position_map'], mask, gt, 2, opts.norm)
    out['dense_3d'] = metrics.dense_nme(pred_maps, batch['position_map'], mask, gt, 3, opts.norm,
                                        opts.z_align)
  return out


def oracle_maps(batch: dict[str, jax.Array], assets: UVAssets, dense: bool) -> jax.Array:
  """The ground truth as a prediction: the dense map, or (without one) a map holding just the
  68 ground-truth landmarks at their UV pixels. Evaluating it must give NME 0."""
  if dense:
    return batch['position_map']
  k = assets.kpt_uv
  return batch['position_map'].at[:, k[:, 1], k[:, 0], :].set(batch['landmarks'])


def make_forward(model: PRNet) -> Callable:
  """(variables, uint8 images (B, R, R, 3)) -> position maps (B, R, R, 3) float32."""
  def forward(variables, images):
    out = model.apply(variables, images.astype(jnp.float32) / 255.0, train=False)
    return out.astype(jnp.float32)
  return forward


# ------------------------------------------------------------------------------- the model

def load_model(config: ml_collections.ConfigDict, workdir: Optional[str],
               checkpoint: Optional[str] = None) -> tuple[PRNet, Any, Any]:
  """(model, variables, step) from `checkpoint`: a checkpoint directory (ours or converted
  official weights), 'untrained' (the seed's initialisation: the baseline), or None for
  WORKDIR/checkpoints."""
  if checkpoint == 'untrained':
    model = PRNet.from_config(ModelConfig.from_mapping(dict(config.model)))
    variables = jax.jit(lambda k: init_variables(model, k))(jax.random.key(config.seed))
    return model, variables, 'untrained'
  path = checkpoint or (os.path.join(workdir, 'checkpoints') if workdir else None)
  if path is None:
    raise EvaluationError('give --checkpoint=DIR (or --workdir with a trained run)')
  try:
    variables, model_config, step = checkpointing.load_variables(path)
  except checkpointing.CheckpointError as e:
    raise EvaluationError(str(e)) from e
  return PRNet.from_config(model_config), variables, step


# ------------------------------------------------------------------------------- batching

def global_batches(n: int, batch_size: int) -> Iterable[tuple[np.ndarray, int]]:
  """Index batches over n examples, the last padded (with index 0) to a full batch;
  yields (indices (B,), number of real ones)."""
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    real = len(idx)
    yield np.concatenate([idx, np.zeros(batch_size - real, idx.dtype)]), real


def _local_rows(indices: np.ndarray) -> np.ndarray:
  lb = input_pipeline.local_batch_size(len(indices))
  p = jax.process_index()
  return indices[p * lb:(p + 1) * lb]


def _progress(done: int, total: int, start: float) -> None:
  rate = done / max(time.time() - start, 1e-9)
  eta = (total - done) / max(rate, 1e-9)
  _log(f'  eval {done}/{total}  {rate:.1f} img/s  ETA {eta:.0f}s')


class Evaluator:
  """Runs a model (or the oracle) over an alignment dataset; returns per-example arrays.

  Used by `evaluate` and by the training loop's periodic evaluation."""

  def __init__(self, model: PRNet, assets: UVAssets, mesh: jax.sharding.Mesh,
               opts: EvalOptions = EvalOptions(), dense: bool = True,
               loss_weights: Optional[jax.Array] = None, oracle: bool = False):
    self.model, self.assets, self.opts, self.dense = model, assets, opts, dense
    self.data_sharding = NamedSharding(mesh, P(mesh.axis_names))
    replicated = NamedSharding(mesh, P())
    # Decoder kernels rearranged once per run, not in every batch (prepare_for_inference).
    self._prepare = None
    if model.impl == 'fast' and not model.prepared and not oracle:
      raw = model
      self._prepare = jax.jit(lambda v: prepare_for_inference(raw, v)[1])
      model = model.clone(prepared=True)
    forward = make_forward(model)

    def step(variables, batch):
      maps = oracle_maps(batch, assets, dense) if oracle else forward(variables, batch['image'])
      out = alignment_metrics(maps, batch, assets, opts, dense)
      if loss_weights is not None and dense:
        out['data_loss'] = losses.position_map_loss(maps, batch['position_map'], loss_weights,
                                                    model.max_pos, per_example=True)
      return out
    self._step = jax.jit(step, out_shardings=replicated)

  def run(self, variables, source, indices: Optional[np.ndarray] = None,
          progress_every: int = 0) -> dict[str, np.ndarray]:
    """Per-example results over `source` (a TFDS random-access source of face records)."""
    decode = input_pipeline.DecodeExample(self.model.resolution)
    if self._prepare is not None:
      variables = self._prepare(variables)
    order = np.arange(len(source)) if indices is None else np.asarray(indices)
    bs = self.opts.batch_size
    outs: list[dict[str, np.ndarray]] = []
    start, done = time.time(), 0
    for k, (idx, real) in enumerate(global_batches(len(order), bs)):
      rows = [decode.map(source[int(order[i])]) for i in _local_rows(idx)]
      local = {f: np.stack([r[f] for r in rows]) for f in input_pipeline.FIELDS}
      out = jax.device_get(self._step(variables, input_pipeline.to_global(local,
                                                                          self.data_sharding)))
      outs.append({name: v[:real] for name, v in out.items()})
      done += real
      if progress_every and ((k + 1) % progress_every == 0 or done == len(order)):
        _progress(done, len(order), start)
    return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}


# ------------------------------------------------------------------------------- summaries

def summarize(per_example: dict[str, np.ndarray], buckets: np.ndarray,
              opts: EvalOptions) -> dict[str, Any]:
  """Bucket means, their mean, all-image means, AUC and CED. The CED's thresholds run from 0
  to 10% NME, or further (in 5% steps) to cover 99% of the images of every metric."""
  p99 = max([float(np.nanpercentile(e, 99)) for e in per_example.values() if len(e)] + [0.0])
  top = max(0.1, float(np.ceil(p99 * 20) / 20)) if np.isfinite(p99) else 0.1
  thresholds = np.linspace(0, top, 201)
  out = {}
  for name, errors in per_example.items():
    s = metrics.bucket_summary(errors, buckets)
    s['auc'] = metrics.auc(errors, opts.auc_threshold)
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
              f'| reconstruction NME, all views | {_pct(s["all"])} | {PAPER["florence"]:.4f} |']
    for b, label in enumerate(metrics.BUCKET_NAMES):
      lines.append(f'| abs(yaw) {label} ({s[f"bucket{b}_count"]} views) | '
                   f'{_pct(s[f"bucket{b}"])} | |')
    return '\n'.join(lines) + '\n'
  ref = '' if name.startswith('aflw2000_3d') else (
      '\nPaper numbers are on AFLW2000-3D, shown for scale: this dataset is different.\n')
  s2 = summary['nme_2d']
  lines += ['| AFLW2000-3D protocol, 68 landmarks 2D | ours | PRNet (paper) |', '|---|---|---|']
  for b, label in enumerate(metrics.BUCKET_NAMES):
    lines.append(f'| abs(yaw) {label} ({s2[f"bucket{b}_count"]} images) | {_pct(s2[f"bucket{b}"])}'
                 f' | {PAPER[f"bucket{b}"]:.2f} |')
  lines.append(f'| mean of the bucket means | {_pct(s2["bucket_mean"])} | '
               f'{PAPER["bucket_mean"]:.2f} |')
  lines += ['', '| all images | 2D | 3D | PRNet 2D | PRNet 3D |', '|---|---|---|---|---|',
            f'| 68 landmarks | {_pct(s2["all"])} | {_pct(summary["nme_3d"]["all"])} | '
            f'{PAPER["nme_2d"]:.2f} | {PAPER["nme_3d"]:.2f} |']
  if 'dense_2d' in summary:
    lines.append(f'| dense (face pixels) | {_pct(summary["dense_2d"]["all"])} | '
                 f'{_pct(summary["dense_3d"]["all"])} | {PAPER["dense_2d"]:.2f} | '
                 f'{PAPER["dense_3d"]:.2f} |')
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


# ------------------------------------------------------------------------------- Florence

def _florence_options(dataset: str, data_dir: Optional[str]):
  """The FlorenceOptions (poses, crop, radius) the dataset was built with."""
  import tensorflow_datasets as tfds
  from datasets import florence as florence_ds
  builder = tfds.builder(dataset, data_dir=data_dir, file_format='array_record')
  return florence_ds.options_of(builder.builder_config)


def run_florence(model: PRNet, variables, assets: UVAssets, mesh, source, order: np.ndarray,
                 opts: EvalOptions, fl_opts=None) -> dict[str, np.ndarray]:
  """Per-view Florence reconstruction errors (`prnet_jax.florence.reconstruction_error`)."""
  from prnet_jax import florence
  fl_opts = fl_opts or florence.FlorenceOptions()
  sharding = NamedSharding(mesh, P(mesh.axis_names))
  if model.impl == 'fast' and not model.prepared:
    model, variables = prepare_for_inference(model, variables)
  forward = jax.jit(make_forward(model), out_shardings=NamedSharding(mesh, P()))
  res = model.resolution
  rows: dict[str, list] = {k: [] for k in ('nme', 'error_mm', 'interocular_mm', 'scale',
                                           'landmarks')}
  start, done = time.time(), 0
  for idx, real in global_batches(len(order), opts.batch_size):
    records = {int(i): source[int(order[i])] for i in set(idx[:real]) | set(_local_rows(idx))}
    local = [input_pipeline.resize_image(data_io.decode_image(records[int(i)]['image']), res)
             for i in _local_rows(idx)]
    images = jax.make_array_from_process_local_data(sharding, np.stack(local))
    maps = np.asarray(jax.device_get(forward(variables, images)))[:real]
    for j, pos in enumerate(maps):
      rec = records[int(idx[j])]
      k = res / fl_opts.image_size  # the view transform is for the rendered size
      t = np.asarray(rec['view_transform'], np.float64) * k
      r = florence.reconstruction_error(assets.vertices(pos), assets.landmarks(pos),
                                        rec['gt_points'], rec['nose_tip'], t, fl_opts)
      for name in rows:
        rows[name].append(assets.landmarks(pos) / k if name == 'landmarks' else r[name])
    done += real
    _progress(done, len(order), start)
  return {k: np.asarray(v) for k, v in rows.items()}


# ------------------------------------------------------------------------------- entry point

def _safe(name: str) -> str:
  return name.replace('/', '-').replace(':', '-')


def evaluate(config: ml_collections.ConfigDict, workdir: str, checkpoint: Optional[str] = None,
             dataset: Optional[str] = None, split: Optional[str] = None,
             oracle: bool = False, out_dir: Optional[str] = None) -> dict[str, Any]:
  """Evaluates a checkpoint (see `load_model`) on `dataset` and writes the report files.

  Defaults come from config.eval (dataset: the training dataset, split 'test'). `oracle`
  evaluates the ground truth against itself (a check of the data and the protocol: NME 0).
  Returns the JSON report as a dict."""
  from prnet_jax import train  # uv assets and the mesh rules are shared with training
  ec = config.get('eval', ml_collections.ConfigDict())
  opts = EvalOptions.from_config({'batch_size': config.batch_size, **dict(ec)})
  dataset = dataset or ec.get('dataset') or config.dataset
  split = split or ec.get('split') or 'test'
  is_florence = dataset.split('/')[0] == 'florence'
  if oracle and is_florence:
    raise EvaluationError('--oracle needs position-map ground truth; florence has scans only')
  if oracle:
    model = PRNet.from_config(ModelConfig.from_mapping(dict(config.model)))
    variables, step, checkpoint = None, 'oracle', 'oracle (ground truth as prediction)'
  else:
    model, variables, step = load_model(config, workdir, checkpoint)
    checkpoint = checkpoint or os.path.join(workdir, 'checkpoints')
  try:
    source = input_pipeline.data_source(dataset, split, config.data_dir or None)
  except input_pipeline.DatasetNotFoundError as e:
    raise EvaluationError(str(e)) from e
  assets = train.uv_assets_for(config, model.resolution)
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  if opts.batch_size % jax.device_count():
    raise EvaluationError(f'eval batch size {opts.batch_size} is not divisible by the '
                          f'{jax.device_count()} devices (set --config.eval.batch_size)')
  if variables is not None:
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
  n = len(source) if not opts.max_examples else min(opts.max_examples, len(source))
  order = np.arange(n)
  names, buckets = [], []
  for i in range(n):
    rec = source[i]
    name = rec['file_name']
    names.append(name.decode() if isinstance(name, bytes) else str(name))
    buckets.append(int(rec['yaw_bucket']))
  meta = {'file_name': names, 'yaw_bucket': np.asarray(buckets, np.int32)}
  _log(f'evaluating {checkpoint} (step {step}) on {dataset}:{split}, {n} images, '
       f'{jax.device_count()} devices')
  t0 = time.time()
  if is_florence:
    fl_opts = _florence_options(dataset, config.data_dir or None)
    per = run_florence(model, variables, assets, mesh, source, order, opts, fl_opts)
    errors = {'florence': per['nme']}
    extra = {'error_mm': per['error_mm'], 'interocular_mm': per['interocular_mm'],
             'icp_scale': per['scale']}
    options = {**dataclasses.asdict(opts), 'florence': dataclasses.asdict(fl_opts)}
  else:
    dense = len(source[0]['position_map']) > 0
    ev = Evaluator(model, assets, mesh, opts, dense=dense, oracle=oracle)
    per = ev.run(variables, source, order, progress_every=10)
    errors = {k: per[k] for k in ALIGNMENT_METRICS if k in per}
    extra = {}
    options = dataclasses.asdict(opts)
  summary = summarize(errors, meta['yaw_bucket'], opts)
  report = {'dataset': dataset, 'split': split, 'checkpoint': str(checkpoint),
            'step': step if isinstance(step, str) else int(step), 'count': n,
            'options': options, 'seconds': time.time() - t0,
            'summary': summary,
            'per_example': {'file_name': meta['file_name'],
                            'yaw_bucket': meta['yaw_bucket'].tolist(),
                            **{k: np.asarray(v).tolist() for k, v in {**errors, **extra}.items()}}}
  if jax.process_index() == 0:
    _write_report(report, per['landmarks'], source, order, model.resolution,
                  out_dir or os.path.join(workdir, 'eval'),
                  _safe(dataset) + ('-oracle' if oracle else
                                    '-untrained' if step == 'untrained' else ''),
                  is_florence)
  return report


def _write_report(report, pred_landmarks, source, order, resolution, out_dir, name,
                  is_florence) -> None:
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
      image = data_io.decode_image(rec['image'])
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
