"""Data parallelism: one jitted step over a Mesh of every device of every process.

This is what `jax.pmap` did, written the way JAX now asks for (pmap is in maintenance mode and
is itself implemented with jit + shard_map): the batch is sharded on the mesh's `data` axis,
parameters and optimizer state are replicated, and XLA inserts the collectives. BatchNorm's
mean and variance are means over the *global* batch, so results do not depend on the device
count.

On a CPU the same mesh is a speed-up: XLA:CPU runs one device's program one operation after
another and keeps only ~1.5 of 2 cores busy; split into one device per core (`split_cpu`), each
core runs its share of the batch (docs/performance.md).
"""

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxresnet import errors, steps

DATA_AXIS = "data"


# Pixels per device and step from which a device per core pays, measured with ResNet-18 on 2
# cores (docs/performance.md): 2 devices ran faster from 64x64 at 32 images each, slower at
# 32x32 with 32 each (there the replicated optimizer update and the all-reduces dominate).
_CPU_PIXELS_PER_DEVICE = 64 * 64 * 32


def cpu_device_count(requested: int, image_size: int, batch_sizes: Sequence[int]) -> int:
  """`requested`, or for 0 the most devices, up to one per core, that divide every batch size
  and leave each device at least `_CPU_PIXELS_PER_DEVICE` pixels per step."""
  if requested < 0:
    raise errors.UserError(f"config.cpu_devices must be >= 0 (0: by size), got {requested}.")
  if requested:
    return requested
  for count in range(len(os.sched_getaffinity(0)), 1, -1):
    if all(b % count == 0 and b // count * image_size**2 >= _CPU_PIXELS_PER_DEVICE
           for b in batch_sizes):  # fmt: skip
      return count
  return 1


def split_cpu(count: int) -> None:
  """Makes XLA's CPU backend `count` devices (GPUs and TPUs are untouched). Kept as they are: a
  device count the user set (XLA_FLAGS' xla_force_host_platform_device_count or
  JAX_NUM_CPU_DEVICES), and the devices of a backend already started (JAX refuses to change
  them: a program that ran JAX before calling `train_and_evaluate`)."""
  user_set = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
  if count == 1 or user_set or "JAX_NUM_CPU_DEVICES" in os.environ:
    return
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # "should be updated before backends are initialized".
    pass


def create_mesh(count: int | None = None) -> Mesh:
  """A 1-D mesh over all devices of all processes (or the first `count`: one process)."""
  return Mesh(np.asarray(jax.devices()[:count]), (DATA_AXIS,))


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
