"""Data parallelism: one mesh axis "data" over every device of every host.

Parameters are replicated; batches are split along their leading axis. The
same code runs on 1 CPU, 8 simulated CPU devices, a GPU, and a TPU pod.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genjax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def per_process_batch_size(global_batch: int) -> int:
  """Checks the global batch splits evenly over processes and devices."""
  devices, processes = jax.device_count(), jax.process_count()
  if global_batch % devices:
    raise ConfigError(f"batch_size={global_batch} must be divisible by the number of devices "
                      f"({devices}); use a multiple of {devices}")
  return global_batch // processes


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's slice of a batch pytree into globally sharded arrays."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)),
                      local_batch)


def replicate(tree, mesh: Mesh):
  """Places a host pytree (identical on every process) on every device of the mesh."""
  target = replicated(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), target, lambda idx, x=x: np.asarray(x)[idx]),
      tree)
