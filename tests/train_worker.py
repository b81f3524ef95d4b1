"""Subprocess entry for training tests (device counts, multi-host, kill/resume).

  python tests/train_worker.py step NUM_DEVICES [FSDP]     -> JSON: first loss and gradients
  python tests/train_worker.py train NUM_DEVICES WORKDIR DATA_DIR STEPS [COORD PROCS PID
                                                                          [OPTIMIZER LR]]
Environment: PRNET_FLOAT64=1 trains the float64 model (x64 on).
"""

import json
import os
import sys

import fixtures  # tests/ (this script's folder) is on sys.path

sys.path.insert(0, fixtures.ROOT)
sys.path.insert(0, os.path.join(fixtures.ROOT, 'configs'))

import jax  # noqa: E402


def worker_config():
  import prnet as config_module
  c = fixtures.tiny_config(width=2)
  # The paper's regulariser and augmentation (what pod runs use), not the demo's lighter ones.
  paper = config_module.get_config('')
  c.weight_decay = paper.weight_decay
  c.augment = paper.augment
  c.batch_size = 8
  c.log_every = int(os.environ.get('LOG_EVERY', 2))
  c.checkpoint_every = int(os.environ.get('CKPT_EVERY', 2))
  c.keep_checkpoints = int(os.environ.get('KEEP_CHECKPOINTS', 3))
  c.eval_every = 0
  if os.environ.get('PRNET_FLOAT64'):
    c.model.dtype = 'float64'
  return c


def first_gradients(fsdp=1):
  """Loss, gradients and BatchNorm statistics of the first step on a fixed batch, without
  augmentation; and the loss and statistics of the same step with the paper's augmentation."""
  import numpy as np

  from prnet_jax.faces.catalog import uv_assets_for
  from prnet_jax.training import train
  rng = np.random.RandomState(0)
  host_batch = {'image': rng.randint(0, 255, (8, 64, 64, 3)).astype(np.uint8),
                'position_map': rng.uniform(0, 60, (8, 64, 64, 3)).astype(np.float32)}
  out = {'devices': jax.device_count()}
  for augmented in (False, True):
    c = worker_config()
    c.mesh.fsdp = fsdp
    if not augmented:
      c.augment = None
    trainer = train.make_trainer(c, 10, uv_assets_for('procedural', 64))
    batch = jax.device_put(host_batch, trainer.data_sharding)
    state = trainer.init(jax.random.key(0))
    tag = '_augmented' if augmented else ''
    if augmented:
      loss, (_, stats) = jax.device_get(jax.jit(trainer.loss_fn)(state.params, state, batch))
    else:
      out['fsdp_leaves'] = sum('fsdp' in str(x.sharding.spec)
                               for x in jax.tree_util.tree_leaves(state.params))
      grad_fn = jax.jit(jax.value_and_grad(trainer.loss_fn, has_aux=True))
      (loss, (_, stats)), grads = jax.device_get(grad_fn(state.params, state, batch))
      leaves = jax.tree_util.tree_leaves(grads)
      out.update(dtype=str(leaves[0].dtype),
                 grads=[np.asarray(g).tolist() for g in leaves[:6]],
                 grad_norms=[float(np.linalg.norm(g)) for g in leaves])
    out['loss' + tag] = float(loss)
    out['stats' + tag] = [float(np.abs(s).sum()) for s in jax.tree_util.tree_leaves(stats)]
  return out


def main():
  jax.config.update('jax_num_cpu_devices', int(sys.argv[2]))
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if os.environ.get('PRNET_FLOAT64'):  # float64 models (x64 on)
    jax.config.update('jax_enable_x64', True)
  mode = sys.argv[1]
  if mode == 'step':
    print(json.dumps(first_gradients(int(sys.argv[3]) if len(sys.argv) > 3 else 1)))
    return
  workdir, data_dir, steps = sys.argv[3], sys.argv[4], int(sys.argv[5])
  if len(sys.argv) > 6:
    jax.distributed.initialize(coordinator_address=sys.argv[6], num_processes=int(sys.argv[7]),
                               process_id=int(sys.argv[8]))
  from prnet_jax.training import train
  c = worker_config()
  c.data_dir = data_dir
  c.num_train_steps = steps
  if len(sys.argv) > 9:
    c.optimizer, c.learning_rate = sys.argv[9], float(sys.argv[10])
  train.train_and_evaluate(c, workdir)


if __name__ == '__main__':
  main()
