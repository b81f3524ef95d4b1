"""The benchmark scripts' shared pieces: the table/JSON report, and the PyTorch baseline
(optional dependency: those tests skip, saying so, where torch is not installed)."""

import json
import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import report  # noqa: E402
from prnet_jax.nn.model import PRNet, init_variables  # noqa: E402


def run_benchmark(script: str, *args: str, output) -> list[dict]:
  """Runs `script` from the repository root with `args` and --output=`output`; its JSON rows."""
  import subprocess
  r = subprocess.run([sys.executable, script, *args, f'--output={output}'],
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(output.read_text())['rows']


def test_report_prints_a_table_and_writes_json(tmp_path, capsys):
  rows = [{'what': 'train', 'images_per_s': 4.7123}, {'what': 'inference', 'images_per_s': 20.0}]
  out = tmp_path / 'sub' / 'r.json'
  report('demo', rows, ['what', 'images_per_s'], str(out))
  printed = capsys.readouterr().out.splitlines()
  assert printed[0].split() == ['what', 'images_per_s']
  assert printed[1].split() == ['train', '4.712']
  data = json.loads(out.read_text())
  assert data['benchmark'] == 'demo' and data['rows'] == rows
  assert data['machine']['cpu_count'] == os.cpu_count()


def test_roofline_bound_is_the_slower_of_compute_and_memory():
  from benchmarks.roofline import roofline
  # 1 TFLOP and 1 GB on a 100 TFLOP/s, 1 TB/s chip: compute-bound, 10 ms at best.
  r = roofline(1e12, 1e9, 0.04, 100e12, 1e12)
  assert r['bound_ms'] == pytest.approx(10.0) and r['roofline_fraction'] == pytest.approx(0.25)
  assert r['tflops'] == pytest.approx(25.0) and r['intensity'] == pytest.approx(1000.0)
  # 1 GFLOP and 100 GB: memory-bound, 100 ms at best; taking 100 ms is the whole roofline.
  r = roofline(1e9, 100e9, 0.1, 100e12, 1e12)
  assert r['bound_ms'] == pytest.approx(100.0) and r['roofline_fraction'] == pytest.approx(1.0)
  assert r['gbytes_per_s'] == pytest.approx(1000.0)


@pytest.mark.slow(reason='benchmark subprocess')
def test_roofline_script_runs_and_reports_every_row(tmp_path):
  """The one command a session lent a GPU runs; here its quick CPU variant (small model)."""
  out = tmp_path / 'roofline.json'
  rows = run_benchmark('benchmarks/roofline.py', '--small', output=out)
  assert [row['what'] for row in rows][1:] == ['inference latency', 'inference', 'train step']
  assert rows[0]['tflops'] > 0 and rows[0]['gbytes_per_s'] > 0
  for row in rows[1:]:
    assert row['images_per_s'] * row['ms'] / 1e3 == pytest.approx(row['batch'])
    assert row['tflops'] > 0 and row['gbytes_per_s'] > 0
    assert 0 < row['roofline_fraction'] < 5  # well-defined (crude CPU peaks can be beaten)


@pytest.mark.slow(reason='benchmark subprocess')
def test_export_latency_script_times_each_runtime(tmp_path):
  pytest.importorskip('onnxruntime', reason='the onnx extra (requirements-test.txt installs it)')
  out = tmp_path / 'export_latency.json'
  rows = run_benchmark('benchmarks/export_latency.py', '--small', '--repeats=2', output=out)
  import importlib.util
  tflite = ['tflite (XNNPACK)'] if importlib.util.find_spec('tensorflow') else []
  assert [row['runtime'] for row in rows] == ['jax (jit, native kernels)', 'jax.export artifact',
                                              'onnxruntime'] + tflite
  assert all(row['batch1_ms'] > 0 for row in rows)


def test_torch_baseline_computes_our_function_and_trains():
  """The side-by-side baseline is only meaningful if it is the same network: with our weights
  copied in, eval outputs agree to float32 round-off; a training step from uint8 NHWC images
  (the benchmark's path, which crashed on channels-last input) runs with finite gradients."""
  torch = pytest.importorskip('torch', reason='PyTorch is optional (pip install torch==2.13.0)')
  from benchmarks.torch_prnet import (
    TorchPRNet,
    l2_kernels,
    load_flax_variables,
    nchw,
    weighted_loss,
  )
  res, width = 64, 4
  model = PRNet(resolution=res, width=width)
  variables = init_variables(model, jax.random.key(0))
  r = np.random.RandomState(0)
  # Non-trivial moving statistics, so eval-mode BN is checked too.
  stats = jax.tree_util.tree_map(lambda s: np.abs(r.randn(*s.shape)).astype(np.float32) + 0.5,
                                 variables['batch_stats'])
  variables = {'params': variables['params'], 'batch_stats': stats}
  x = r.rand(2, res, res, 3).astype(np.float32)
  ours = np.asarray(model.apply(variables, x))

  tmodel = TorchPRNet(res, width)
  load_flax_variables(tmodel, jax.device_get(variables))
  tmodel.eval()
  with torch.inference_mode():
    theirs = tmodel(nchw(x)).numpy().transpose(0, 2, 3, 1)
  assert np.abs(ours - theirs).max() / ours.std() < 5e-3

  images = r.randint(0, 255, (4, res, res, 3)).astype(np.uint8)
  tx = nchw(images, 1 / 255.0)
  assert tx.is_contiguous() and tx.dtype == torch.float32 and tx.shape == (4, 3, res, res)
  tmodel.train()
  target = nchw(r.uniform(0, res, (4, res, res, 3)))
  loss = weighted_loss(tmodel(tx), target, torch.ones(res, res), tmodel.max_pos) + l2_kernels(
      tmodel, 1e-4)
  loss.backward()
  grads = [p.grad for p in tmodel.parameters()]
  assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_native_kernels_script_reports_both_ops_and_agreement(tmp_path):
  """The per-layer native-vs-XLA table (quick variant): every shape has a kernel-gradient row,
  few-channel shapes a forward row, and native and XLA agree to float32 round-off."""
  from prnet_jax import native
  if native.find_compiler() is None or not native.enabled_by_env():
    pytest.skip('no C++ compiler (or PRNET_JAX_NATIVE=0): the native kernels are not built')
  out = tmp_path / 'native.json'
  rows = run_benchmark('benchmarks/native_kernels.py', '--small', '--repeats=2', output=out)
  assert sum(row['op'] == 'kernel_grad' for row in rows) == 4
  assert {row['shape'] for row in rows if row['op'] == 'forward'} >= {
      '64px 3->16 4x4 pad (1, 2)/(1, 2)', '32px 16->3 4x4 pad (2, 1)/(2, 1)'}
  for row in rows:
    assert row['max_rel_diff'] < 1e-4, row
    assert row['native_ms'] > 0 and row['xla_ms'] > 0


@pytest.mark.slow(reason='compiles the train step')
def test_memory_estimate_counts_the_state_the_batch_and_the_activations():
  """benchmarks/memory_estimate.py's per-device accounting: the compiled step's arguments are
  the train state plus the batch, byte for byte; its temporaries hold the activations."""
  import configs.prnet as config_module
  from benchmarks.memory_estimate import step_memory
  from prnet_jax.faces.face_model import derive_uv_assets
  from prnet_jax.faces.procedural_face import procedural_face_model
  from prnet_jax.training import train
  def config():
    c = config_module.get_config('small')
    c.model.resolution, c.model.width = 32, 2  # the accounting, not the size, is under test
    c.augment = None
    return c
  res = config().model.resolution
  trainer = train.make_trainer(config(), 100, derive_uv_assets(procedural_face_model(), res))
  state = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(trainer.abstract_state))
  b = 4
  m = step_memory(config(), b)
  assert m['arguments'] == pytest.approx(state + b * res * res * 3 * (1 + 4), rel=1e-3)
  # Temporaries hold at least the activations of the first conv layer, per image.
  assert m['temporaries'] > b * res * res * config().model.width * 4
