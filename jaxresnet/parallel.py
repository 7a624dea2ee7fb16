"""Data parallelism: one jitted step over a Mesh of every device of every process.

This is what `jax.pmap` did, written the way JAX now asks for (pmap is in maintenance mode and
is itself implemented with jit + shard_map): the batch is sharded on the mesh's `data` axis,
parameters and optimizer state are replicated, and XLA inserts the collectives. BatchNorm's
mean and variance are means over the *global* batch, so results do not depend on the device
count.
"""

import functools
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxresnet import errors, steps

DATA_AXIS = "data"


def create_mesh() -> Mesh:
  """A 1-D mesh over all devices of all processes."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles every process's slice of a batch into global arrays sharded on `data`.

  The same call serves one process (the slice is the whole batch) or many.
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def check_batch_size(batch_size: int, mesh: Mesh, field: str) -> None:
  """Each device must get the same number of examples."""
  if batch_size % mesh.size:
    raise errors.UserError(
      f"config.{field}={batch_size} is not divisible by the {mesh.size} devices; use a multiple "
      f"of {mesh.size} (e.g. {max(mesh.size, batch_size // mesh.size * mesh.size)})."
    )


def jit_train_step(
  config: ml_collections.ConfigDict, mesh: Mesh, class_weights: np.ndarray | None = None
):
  """`steps.train_step` jitted over `mesh`; the input state's buffers are donated."""
  return jax.jit(
    functools.partial(steps.train_step, config=config, class_weights=class_weights),
    in_shardings=(replicated(mesh), batch_sharded(mesh), replicated(mesh)),
    out_shardings=(replicated(mesh), replicated(mesh)),
    donate_argnums=(0,),
  )


def jit_eval_step(model: Any, config: ml_collections.ConfigDict, mesh: Mesh):
  """`steps.eval_step` of `model` jitted over `mesh`: (variables, batch) -> replicated metrics."""
  return jax.jit(
    functools.partial(steps.eval_step, model=model, config=config),
    in_shardings=(replicated(mesh), batch_sharded(mesh)),
    out_shardings=replicated(mesh),
  )
