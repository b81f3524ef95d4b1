"""The device mesh and the sharding rules of training and evaluation (one place for both).

Mesh axes ('data', 'fsdp'): the batch is split over all devices; parameters are replicated, or
with fsdp > 1 their large leaves are split along the last axis over 'fsdp'.
"""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

# Parameters smaller than this stay replicated under FSDP (splitting them costs more than it saves).
FSDP_MIN_SIZE = 2 ** 14


def make_mesh(fsdp: int = 1) -> jax.sharding.Mesh:
  """('data', 'fsdp') mesh over all devices of all processes; fsdp=1 is pure data parallel."""
  n = jax.device_count()
  if fsdp < 1 or n % fsdp:
    raise ValueError(f'{n} devices cannot be split into fsdp groups of {fsdp}')
  # Auto axes: XLA propagates shardings from the inputs (the step stays sharding-agnostic).
  return jax.make_mesh((n // fsdp, fsdp), ('data', 'fsdp'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device of the mesh."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_sharding(mesh: jax.sharding.Mesh, leaf) -> NamedSharding:
  """FSDP rule: shard the last axis over 'fsdp' when divisible and large; else replicate."""
  fsdp = mesh.shape.get('fsdp', 1)
  shape = getattr(leaf, 'shape', ())
  if fsdp > 1 and len(shape) >= 2 and shape[-1] % fsdp == 0 and np.prod(shape) >= FSDP_MIN_SIZE:
    return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), 'fsdp'))
  return replicated(mesh)
