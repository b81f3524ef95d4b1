"""The alignment evaluator: a model (or the oracle) over a dataset of face records, jitted over
a device mesh, giving per-example landmark and dense NME (and the data loss).

Every process decodes its rows of each global batch; the last batch is padded (the padding is
dropped); metrics are computed on the device (`prnet_jax.evaluation.metrics`). Used by `--mode=eval`
(`prnet_jax.evaluation.evaluate`) and by the training loop's periodic evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax.data import input_pipeline
from prnet_jax.evaluation import metrics
from prnet_jax.faces.uv_assets import UVAssets
from prnet_jax.nn import losses, sharding
from prnet_jax.nn.model import PRNet, inference_fn
from prnet_jax.runtime import log


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  norm: str = 'box'             # metrics.NORMALIZERS
  dense_norm: str = 'box'       # metrics.DENSE_NORMALIZERS ('face_box': the PyTorch port's)
  z_align: str = 'mean'         # metrics.Z_ALIGNS (3D metrics)
  auc_threshold: float = 0.07   # AUC of the CED up to 7% NME
  batch_size: int = 16          # global
  max_examples: int = 0         # 0: all

  @classmethod
  def from_config(cls, c) -> 'EvalOptions':
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(c).items() if k in fields})


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
    out['dense_2d'] = metrics.dense_nme(pred_maps, batch['position_map'], mask, gt, 2,
                                        opts.dense_norm)
    out['dense_3d'] = metrics.dense_nme(pred_maps, batch['position_map'], mask, gt, 3,
                                        opts.dense_norm, opts.z_align)
  return out


def oracle_maps(batch: dict[str, jax.Array], assets: UVAssets, dense: bool) -> jax.Array:
  """The ground truth as a prediction: the dense map, or (without one) a map holding just the
  68 ground-truth landmarks at their UV pixels. Evaluating it must give NME 0."""
  if dense:
    return batch['position_map']
  maps = batch['position_map']
  # The tap pixels' values whose readout is the landmarks: the least-norm solution of
  # W x = landmarks, exact while the 68 rows of tap weights are independent (taps may share
  # pixels: neighbouring bilinear samples, or the affine taps of the 'ict' jaw).
  idx, w = assets.taps()
  pixels, column = np.unique(idx, return_inverse=True)
  weights = np.zeros((idx.shape[0], len(pixels)))
  np.add.at(weights, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), column.reshape(-1)),
            w.reshape(-1))
  values = jnp.einsum('pl,blc->bpc', jnp.asarray(np.linalg.pinv(weights), maps.dtype),
                      batch['landmarks'].astype(maps.dtype))
  flat = maps.reshape(maps.shape[0], -1, maps.shape[-1])
  return flat.at[:, pixels, :].set(values).reshape(maps.shape)


# ------------------------------------------------------------------------------- batching

def global_batches(n: int, batch_size: int) -> Iterable[tuple[np.ndarray, int]]:
  """Index batches over n examples, the last padded (with index 0) to a full batch;
  yields (indices (B,), number of real ones)."""
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    real = len(idx)
    yield np.concatenate([idx, np.zeros(batch_size - real, idx.dtype)]), real


def local_rows(indices: np.ndarray) -> np.ndarray:
  """This process's rows of a global batch of indices."""
  lb = input_pipeline.local_batch_size(len(indices))
  p = jax.process_index()
  return indices[p * lb:(p + 1) * lb]


def progress(done: int, total: int, start: float) -> None:
  rate = done / max(time.time() - start, 1e-9)
  eta = (total - done) / max(rate, 1e-9)
  log(f'  eval {done}/{total}  {rate:.1f} img/s  ETA {eta:.0f}s')


# ------------------------------------------------------------------------------- evaluator

class Evaluator:
  """Runs a model (or the oracle) over an alignment dataset; returns per-example arrays."""

  def __init__(self, model: PRNet, assets: UVAssets, mesh: jax.sharding.Mesh,
               opts: EvalOptions = EvalOptions(), dense: bool = True,
               loss_weights: Optional[jax.Array] = None, oracle: bool = False):
    self.model, self.assets, self.opts, self.dense = model, assets, opts, dense
    self.data_sharding = sharding.batch_sharding(mesh)
    prepare, forward = inference_fn(model)
    # Decoder kernels rearranged once per run, not in every batch.
    self._prepare = jax.jit(prepare)

    def step(variables, batch):
      maps = oracle_maps(batch, assets, dense) if oracle else forward(variables, batch['image'])
      out = alignment_metrics(maps, batch, assets, opts, dense)
      if loss_weights is not None and dense:
        out['data_loss'] = losses.position_map_loss(maps, batch['position_map'], loss_weights,
                                                    model.max_pos, per_example=True)
      return out
    self._oracle = oracle
    self._step = jax.jit(step, out_shardings=sharding.replicated(mesh))

  def run(self, variables, source, indices: Optional[np.ndarray] = None,
          progress_every: int = 0) -> dict[str, np.ndarray]:
    """Per-example results over `source` (a TFDS random-access source of face records)."""
    decode = input_pipeline.DecodeExample(self.model.resolution)
    if not self._oracle:
      variables = self._prepare(variables)
    order = np.arange(len(source)) if indices is None else np.asarray(indices)
    bs = self.opts.batch_size
    outs: list[dict[str, np.ndarray]] = []
    start, done = time.time(), 0
    for k, (idx, real) in enumerate(global_batches(len(order), bs)):
      rows = [decode.map(source[int(order[i])]) for i in local_rows(idx)]
      local = {f: np.stack([r[f] for r in rows]) for f in input_pipeline.FIELDS}
      out = jax.device_get(self._step(variables, input_pipeline.to_global(local,
                                                                          self.data_sharding)))
      outs.append({name: v[:real] for name, v in out.items()})
      done += real
      if progress_every and ((k + 1) % progress_every == 0 or done == len(order)):
        progress(done, len(order), start)
    return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}
