"""Evaluation entry point: the paper's protocols over a dataset, as JSON, a Markdown table and
plots.

    python launch.py --config=configs/prnet.py:small --workdir=workdirs/small --mode=eval
    evaluate.evaluate(config, workdir)              # the same from Python / Colab

Datasets: `aflw2000_3d` (68-landmark NME 2D/3D by |yaw| bucket, dense NME when the build had
BFM), `synthetic_faces[/config]` (the same; dense maps always present), both with
`prnet_jax.evaluation.alignment`, and `florence` (3D reconstruction error after ICP,
`prnet_jax.evaluation.florence.evaluate_views`). The model runs jitted over a mesh of all devices.

Writes WORKDIR/eval/<name>.json (every number, per-example values, options, checkpoint step),
<name>.md, <name>_ced.png and <name>_examples.png (`prnet_jax.evaluation.reports`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from prnet_jax.data import florence_views, input_pipeline
from prnet_jax.evaluation import alignment, florence, reports
from prnet_jax.faces.catalog import uv_assets_for
from prnet_jax.faces.uv_assets import AssetError
from prnet_jax.nn import checkpoints, sharding
from prnet_jax.nn.model import ModelConfig, PRNet, init_variables
from prnet_jax.runtime import log


class EvaluationError(RuntimeError):
  pass


def load_model(config: ml_collections.ConfigDict, workdir: Optional[str],
               checkpoint: Optional[str] = None) -> tuple[PRNet, Any, Any]:
  """(model, variables, step) from `checkpoint`: a checkpoint directory or a run's workdir
  (ours or converted official weights), 'untrained' (the seed's initialisation: the baseline),
  or None for WORKDIR/checkpoints."""
  if checkpoint == 'untrained':
    model = PRNet.from_config(ModelConfig.from_mapping(dict(config.model)))
    variables = init_variables(model, jax.random.key(config.seed))
    return model, variables, 'untrained'
  path = checkpoint or workdir
  if path is None:
    raise EvaluationError('give --checkpoint=DIR (or --workdir with a trained run)')
  try:
    variables, model_config, step = checkpoints.load_variables(path)
  except checkpoints.CheckpointError as e:
    raise EvaluationError(str(e)) from e
  return PRNet.from_config(model_config), variables, step


def _safe(name: str) -> str:
  return name.replace('/', '-').replace(':', '-')


def evaluate(config: ml_collections.ConfigDict, workdir: str, checkpoint: Optional[str] = None,
             dataset: Optional[str] = None, split: Optional[str] = None,
             oracle: bool = False, out_dir: Optional[str] = None) -> dict[str, Any]:
  """Evaluates a checkpoint (see `load_model`) on `dataset` and writes the report files.

  Defaults come from config.eval (dataset: the training dataset, split 'test'). `oracle`
  evaluates the ground truth against itself (a check of the data and the protocol: NME 0).
  Returns the JSON report as a dict."""
  ec = config.get('eval', ml_collections.ConfigDict())
  opts = alignment.EvalOptions.from_config({'batch_size': config.batch_size, **dict(ec)})
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
    checkpoint = checkpoint or os.path.join(workdir, checkpoints.CHECKPOINTS_SUBDIR)
  try:
    builder = input_pipeline.prepared_builder(dataset, config.data_dir or None)
    source = builder.as_data_source(split=split)
  except (input_pipeline.DatasetNotFoundError, KeyError, ValueError) as e:
    raise EvaluationError(f'{dataset}:{split}: {e}') from e
  try:
    assets = uv_assets_for(config.uv_assets, model.resolution)
  except AssetError as e:
    raise EvaluationError(str(e)) from e
  mesh = sharding.make_mesh()
  if opts.batch_size % jax.device_count():
    raise EvaluationError(f'eval batch size {opts.batch_size} is not divisible by the '
                          f'{jax.device_count()} devices (set --config.eval.batch_size)')
  if variables is not None:
    variables = jax.device_put(variables, sharding.replicated(mesh))
  n = len(source) if not opts.max_examples else min(opts.max_examples, len(source))
  order = np.arange(n)
  names, buckets = [], []
  for i in range(n):
    rec = source[i]
    name = rec['file_name']
    names.append(name.decode() if isinstance(name, bytes) else str(name))
    buckets.append(int(rec['yaw_bucket']))
  buckets = np.asarray(buckets, np.int32)
  log(f'evaluating {checkpoint} (step {step}) on {dataset}:{split}, {n} images, '
                f'{jax.device_count()} devices')
  t0 = time.time()
  if is_florence:
    fl_opts = florence_views.options_from_metadata(builder.info.metadata)
    per = florence.evaluate_views(model, variables, assets, mesh, source, order,
                                  opts.batch_size, fl_opts)
    errors = {'florence': per['nme']}
    extra = {'error_mm': per['error_mm'], 'interocular_mm': per['interocular_mm'],
             'icp_scale': per['scale']}
    options = {**dataclasses.asdict(opts), 'florence': dataclasses.asdict(fl_opts)}
  else:
    dense = len(source[0]['position_map']) > 0
    ev = alignment.Evaluator(model, assets, mesh, opts, dense=dense, oracle=oracle)
    per = ev.run(variables, source, order, progress_every=10)
    errors = {k: per[k] for k in reports.ALIGNMENT_METRICS if k in per}
    extra = {}
    options = dataclasses.asdict(opts)
  summary = reports.summarize(errors, buckets, opts.auc_threshold)
  if is_florence:  # the scans are metric: the mean error in millimetres beside the NME
    summary['florence']['error_mm'] = float(np.mean(per['error_mm']))
  report = {'dataset': dataset, 'split': split, 'checkpoint': str(checkpoint),
            'step': step if isinstance(step, str) else int(step), 'count': n,
            'options': options, 'seconds': time.time() - t0,
            'summary': summary,
            'per_example': {'file_name': names, 'yaw_bucket': buckets.tolist(),
                            **{k: np.asarray(v).tolist() for k, v in {**errors, **extra}.items()}}}
  if jax.process_index() == 0:
    reports.write_report(report, per['landmarks'], source, order, model.resolution,
                         out_dir or os.path.join(workdir, 'eval'),
                         _safe(dataset) + ('-oracle' if oracle else
                                           '-untrained' if step == 'untrained' else ''),
                         is_florence)
  return report
