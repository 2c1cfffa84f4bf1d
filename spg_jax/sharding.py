"""The device mesh and the placement of batches on it.

The mesh has two axes:
  `data`  the batch is split over it (data parallelism across all devices of all hosts);
  `fsdp`  parameters and optimizer state are split over it (fully sharded data parallelism); the
          batch is split over it too, so every device still sees a different slice of the batch.
`data × fsdp` = all devices. Both axes are `AxisType.Auto`: the jitted steps fix the shardings of
their inputs and outputs (parameters, batches, metrics) and XLA's partitioner propagates them through
the networks. `Explicit` axes were tried and rejected: sharding-in-types requires an `out_sharding`
on every reshape that merges a dimension with the batch-sharded one (the flow warp's gather, pixel
shuffle, region pooling), which would tie the pure NHWC ops to this mesh's axis names.

Batches arrive per host as NumPy arrays whose leading dimension is the host's share of the global
batch (see `input_pipeline.pipeline`): `global_batch` assembles them into global `jax.Array`s
sharded along (`data`, `fsdp`) with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def make_mesh(fsdp: int = 1, devices: list[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A (data, fsdp) mesh over `devices` (default: all devices of all processes).

  Args:
    fsdp: size of the `fsdp` axis; must divide the number of devices. 1 = pure data parallelism.
    devices: the devices to use, default `jax.devices()`.
  """
  devices = list(jax.devices() if devices is None else devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} must be ≥ 1 and divide the number of devices ({len(devices)})")
  return jax.make_mesh((len(devices) // fsdp, fsdp), BATCH_AXES,
                       axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device of the mesh; other dimensions replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> int:
  """Returns this process's share of the global batch; raises unless it divides evenly."""
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(f"batch size {global_batch_size} is not a multiple of the number of devices "
                     f"({num_devices}); every device must get the same number of pairs")
  return global_batch_size // jax.process_count()


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Host-local NumPy batch (leading dim = this host's share) → global arrays sharded on `mesh`."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh) -> Any:
  """Replicated leaves, or with `mesh.fsdp` > 1 each leaf split along its largest divisible dim.

  The rule depends only on shapes, so parameters, their Adam moments and their batch statistics
  are split alike; scalars and small vectors that no dimension of which divides stay replicated.
  """
  fsdp = mesh.shape[FSDP_AXIS]

  def rule(leaf):
    if fsdp == 1:
      return NamedSharding(mesh, P())
    dims = [d for d in np.argsort(leaf.shape)[::-1] if leaf.shape[d] % fsdp == 0 and leaf.shape[d] >= fsdp]
    if not dims:
      return NamedSharding(mesh, P())
    spec = [None] * len(leaf.shape)
    spec[dims[0]] = FSDP_AXIS
    return NamedSharding(mesh, P(*spec))

  return jax.tree.map(rule, abstract_state)
