"""The train step and the inference forward lower for GPUs and TPUs on a CPU-only machine
(prnet_jax.training.lowering): no CPU-only custom call, the intended shardings and donation."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from prnet_jax import native
from prnet_jax.nn.model import ModelConfig
from prnet_jax.training import lowering

from fixtures import ROOT, config_module


def test_inference_lowers_for_gpu_and_tpu_without_the_native_cpu_kernels():
  model_config = ModelConfig(resolution=64, width=4)
  if native.available():  # control: the CPU lowering of the same function uses them
    cpu = lowering.summary(lowering.lower_inference(model_config, ('cpu',)))
    assert cpu['cpu_only_calls'], cpu
  exported = lowering.lower_inference(model_config, ('cuda', 'tpu'), batch_size=2)
  s = lowering.summary(exported)
  assert s['platforms'] == ['cuda', 'tpu'] and s['cpu_only_calls'] == [], s
  assert exported.in_avals[-1].shape == (2, 64, 64, 3) and exported.in_avals[-1].dtype == np.uint8
  assert exported.out_avals[0].shape == (2, 64, 64, 3)
  assert exported.out_avals[0].dtype == np.float32


def test_the_train_step_lowers_on_one_device_with_its_state_donated():
  config = config_module().get_config('small')
  config.model.width, config.batch_size = 2, 4
  exported, trainer = lowering.lower_train_step(config, ('cuda', 'tpu'))
  s = lowering.summary(exported)
  n_state = len(jax.tree_util.tree_leaves(trainer.abstract_state))
  assert s['cpu_only_calls'] == [] and s['devices'] == 1
  assert s['inputs'] == n_state + 2 and s['donated_inputs'] == n_state  # the state, not the batch
  assert [a.shape for a in exported.in_avals[-2:]] == [(4, 64, 64, 3)] * 2


@pytest.mark.slow(reason='subprocess on 4 simulated CPU devices')
def test_the_train_step_lowers_sharded_over_a_mesh_for_gpu_and_tpu():
  """4 devices, mesh data=2 x fsdp=2: the batch split over both axes, large kernels' last axis
  over 'fsdp', small parameters replicated, the state donated, no CPU-only call."""
  code = '''
import json, sys
sys.path.insert(0, 'configs')
import jax, prnet
from prnet_jax.training import lowering
c = prnet.get_config('small')
c.model.width, c.batch_size, c.mesh.fsdp = 8, 8, 2
exported, trainer = lowering.lower_train_step(c, ('cuda', 'tpu'))
s = lowering.summary(exported)
s['state_leaves'] = len(jax.tree_util.tree_leaves(trainer.abstract_state))
print(json.dumps(s))
'''
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='4')
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  s = json.loads(r.stdout.strip().splitlines()[-1])
  assert s['platforms'] == ['cuda', 'tpu'] and s['devices'] == 4
  assert s['mesh'] == {'data': 2, 'fsdp': 2} and s['cpu_only_calls'] == []
  assert s['donated_inputs'] == s['state_leaves'] == s['inputs'] - 2
  batch = s['input_shardings'][-2:]
  assert batch == ['[{"data", "fsdp"}, {}, {}, {}]'] * 2, batch
  state = s['input_shardings'][:-2]
  assert sum(x.endswith('{"fsdp"}]') for x in state) > 10  # large kernels and their moments
  assert sum('"' not in x for x in state) > 100               # the rest replicated
