r"""The train step and the inference forward pass lowered for GPUs and TPUs, on any machine.

    python -m prnet_jax.training.lowering --config=configs/prnet.py:gpu --platforms=cuda,tpu

`jax.export` lowers a jitted function for platforms other than the one it runs on, so a CPU-only
machine can check what an accelerator would be given: that the native CPU kernels
(`prnet_jax.native`, behind `lax.platform_dependent`) drop out, that the batch is sharded over
the mesh and the parameters as `sharding.param_sharding` says, and that the train state is
donated. Lowering is not compiling: XLA's memory and cost estimates need the accelerator's own
compiler (`benchmarks/device_check.py` reports them there).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Optional, Sequence

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from prnet_jax import native
from prnet_jax.faces.catalog import uv_assets_for
from prnet_jax.nn.model import ModelConfig, PRNet, inference_fn, init_variables

PLATFORMS = ('cuda', 'tpu', 'cpu')


def cpu_only_targets() -> set[str]:
  """Custom-call targets registered for CPU alone: prnet_jax's native kernels."""
  return {native.TARGET, native.RASTER_TARGET, *native.FORWARD_TARGETS.values()}


def _allow_native():
  """jax.export refuses custom calls without compatibility guarantees; here the native kernels
  are let through so that `summary` reports them where they would be (CPU lowerings)."""
  return [jax_export.DisabledSafetyCheck.custom_call(t) for t in sorted(cpu_only_targets())]


def custom_call_targets(exported) -> list[str]:
  """Sorted distinct custom-call targets of an Exported module's StableHLO."""
  text = exported.mlir_module()
  return sorted(set(re.findall(r'stablehlo\.custom_call @([\w.$-]+)', text))
                | set(re.findall(r'call_target_name = "([^"]+)"', text)))


def _main_args(exported) -> list[str]:
  """The attribute text of each argument of the module's @main."""
  text = exported.mlir_module()
  main = re.search(r'func\.func public @main\((.*?)\)\s*->', text, re.S)
  return re.split(r'(?=%arg\d+: )', main.group(1))[1:] if main else []


def donated_inputs(exported) -> int:
  """How many of the module's inputs are donated (aliased to an output or buffer donors)."""
  return sum(bool(re.search(r'tf\.aliasing_output|jax\.buffer_donor', a))
             for a in _main_args(exported))


def input_shardings(exported) -> list[str]:
  """Each input's sharding as the module states it: Shardy's dimension list (e.g.
  '[{"data", "fsdp"}, {}, {}, {}]': the first axis split over both mesh axes; '[{}, ...]':
  replicated), GSPMD's `mhlo.sharding`, or '' where none is given."""
  out = []
  for arg in _main_args(exported):
    sdy = re.search(r'sdy\.sharding<@\w+, (\[.*?\])>', arg)
    gspmd = re.search(r'mhlo\.sharding = "([^"]*)"', arg)
    out.append(sdy.group(1) if sdy else gspmd.group(1) if gspmd else '')
  return out


def mesh_axes(exported) -> dict[str, int]:
  """The module's mesh, {axis name: size} (Shardy), or {} without one."""
  mesh = re.search(r'sdy\.mesh @\w+ = <\[(.*?)\]>', exported.mlir_module())
  return {k: int(v) for k, v in re.findall(r'"(\w+)"=(\d+)', mesh.group(1))} if mesh else {}


def lower_train_step(config, platforms: Sequence[str] = ('cuda',), mesh=None):
  """Exported train step of `config` ((state, batch) -> (state, metrics)) for `platforms`, with
  the shardings of `train.make_trainer` over all devices (or `mesh`)."""
  from prnet_jax.training import train
  model_config = ModelConfig.from_mapping(dict(config.model))
  assets = uv_assets_for(config.uv_assets, model_config.resolution)
  trainer = train.make_trainer(config, 1000, assets, mesh)
  r = model_config.resolution
  batch = {'image': jax.ShapeDtypeStruct((config.batch_size, r, r, 3), jnp.uint8,
                                         sharding=trainer.data_sharding),
           'position_map': jax.ShapeDtypeStruct((config.batch_size, r, r, 3), jnp.float32,
                                                sharding=trainer.data_sharding)}
  return jax_export.export(trainer.step, platforms=tuple(platforms),
                           disabled_checks=_allow_native())(trainer.abstract_state, batch), trainer


def lower_inference(model_config: ModelConfig, platforms: Sequence[str] = ('cuda',),
                    batch_size: int = 1):
  """Exported inference forward ((prepared variables, uint8 images) -> position maps), traced
  as the predictor traces it (native kernels allowed: they must drop out of other platforms)."""
  model = PRNet.from_config(model_config)
  prepare, forward = inference_fn(model)
  variables = jax.eval_shape(lambda: prepare(init_variables(model, jax.random.key(0))))
  r = model_config.resolution
  images = jax.ShapeDtypeStruct((batch_size, r, r, 3), jnp.uint8)
  return jax_export.export(jax.jit(forward), platforms=tuple(platforms),
                           disabled_checks=_allow_native())(variables, images)


def summary(exported) -> dict[str, Any]:
  return {'platforms': list(exported.platforms), 'devices': exported.nr_devices,
          'inputs': len(exported.in_avals), 'donated_inputs': donated_inputs(exported),
          'custom_calls': custom_call_targets(exported),
          'cpu_only_calls': sorted(set(custom_call_targets(exported)) & cpu_only_targets()),
          'mesh': mesh_axes(exported), 'input_shardings': input_shardings(exported)}


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='configs/prnet.py', help='configs/prnet.py[:variant]')
  p.add_argument('--platforms', default='cuda,tpu')
  p.add_argument('--batch_size', type=int, default=None, help='default: the config\'s')
  a = p.parse_args(argv)
  import importlib.util
  import os
  path, _, variant = a.config.partition(':')
  spec = importlib.util.spec_from_file_location('config_module', path)
  if spec is None or not os.path.isfile(path):
    print(f'error: {path}: no such config file', file=sys.stderr)
    return 2
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant or None)
  if a.batch_size:
    config.batch_size = a.batch_size
  platforms = [x for x in a.platforms.split(',') if x]
  unknown = [x for x in platforms if x not in PLATFORMS]
  if unknown:
    print(f'error: unknown platform(s) {unknown}; choose from {PLATFORMS}', file=sys.stderr)
    return 2
  for name, exported in (('train step', lower_train_step(config, platforms)[0]),
                         ('inference', lower_inference(
                             ModelConfig.from_mapping(dict(config.model)), platforms))):
    s = summary(exported)
    sharded = sum('"' in x for x in s['input_shardings'])
    print(f'{name}: platforms {s["platforms"]}, {s["devices"]} device(s), mesh {s["mesh"] or "none"}, '
          f'{s["inputs"]} inputs ({s["donated_inputs"]} donated, {sharded} sharded), custom calls '
          f'{s["custom_calls"] or "none"}, CPU-only calls {s["cpu_only_calls"] or "none"}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
