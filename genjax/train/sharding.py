"""How arrays are placed on the devices of every host.

The mesh has two axes, ("data", "fsdp"), over all devices of all hosts. Batches are split
along their leading axis over every device. The training state (parameters, optimizer
state, EMA) is replicated, unless `config.sharding.fsdp` = F > 1: then each large array is
split over F devices along one of its dimensions (ZeRO-3 storage), so each device holds about
1/F of the state between steps. Inside a step the parameters are gathered whole (`gathered`)
for the forward and backward passes, and the gradients are reduced onto the split optimizer
state, so the peak adds one whole copy of the parameters and gradients. Why not let XLA gather
each layer's weights where it is used: its sharding propagation through reshapes of split
feature dimensions (a dense layer reshaped into a feature map, GroupNorm's channel groups)
produced WRONG gradients on XLA:CPU (the VAE's encoder gradients off by up to 179% with F=4,
tests/train/test_fsdp.py), while gathering first is exact for every family.
The same code runs on 1 CPU, 8 simulated CPU devices, a GPU, and a TPU pod.

Which dimension is split is decided by a rule on the array's shape alone (`fsdp_spec`), so a
parameter and its Adam moments always share a layout, in every family and text encoder.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genjax.errors import ConfigError

DATA_AXIS, FSDP_AXIS = "data", "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # a batch is split over every device
DEFAULT_MIN_SHARD_SIZE = 2**14  # arrays with fewer elements stay replicated: not worth a gather


def make_mesh(fsdp: int = 1, devices=None) -> Mesh:
  """The ("data", "fsdp") mesh over `devices` (default: every device of every host)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  if fsdp < 1 or devices.size % fsdp:
    raise ConfigError(f"sharding.fsdp={fsdp} must be >= 1 and divide the number of devices "
                      f"({devices.size})")
  return Mesh(devices.reshape(-1, fsdp), (DATA_AXIS, FSDP_AXIS))


def mesh_for(config) -> Mesh:
  return make_mesh(int(config.get("sharding", {}).get("fsdp", 1)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def gathered(params, mesh: Mesh):
  """Inside a jitted step: `params` whole on every device (an all-gather of the split arrays
  when fsdp > 1; nothing otherwise). See the module docstring for why."""
  if mesh.shape[FSDP_AXIS] == 1:
    return params
  return jax.lax.with_sharding_constraint(params, jax.tree.map(lambda _: replicated(mesh), params))


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(shape, fsdp: int, min_size: int = DEFAULT_MIN_SHARD_SIZE) -> P:
  """The rule: an array of at least `min_size` elements is split over the fsdp axis along its
  largest dimension that `fsdp` divides (the last such, on ties: the output features of a
  kernel); anything else is replicated."""
  if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  candidates = [(size, i) for i, size in enumerate(shape) if size % fsdp == 0]
  if not candidates:
    return P()
  _, dim = max(candidates)
  return P(*([None] * dim + [FSDP_AXIS]))


def state_shardings(abstract_state, mesh: Mesh, min_size: int = DEFAULT_MIN_SHARD_SIZE):
  """NamedShardings for a pytree of arrays (or ShapeDtypeStructs) by `fsdp_spec`."""
  fsdp = mesh.shape[FSDP_AXIS]
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, fsdp, min_size)),
                      abstract_state)


def shardings_of(tree):
  """The shardings of a pytree of jax.Arrays (e.g. a restored or initialised state)."""
  return jax.tree.map(lambda x: x.sharding, tree)


def bytes_per_device(tree) -> int:
  """Bytes of `tree` held by one device (the first addressable one)."""
  device = jax.local_devices()[0]
  total = 0
  for leaf in jax.tree.leaves(tree):
    total += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == device)
  return total


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
