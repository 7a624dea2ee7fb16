"""The jitted train step on a mesh of every device vs on a 1-device mesh, same global batches.

Run by `tests/test_train.py` in a subprocess, because JAX fixes the number of CPU devices when it
starts (`XLA_FLAGS=--xla_force_host_platform_device_count=4`), and float64 needs
`JAX_ENABLE_X64=1` from the start too:

    python -m tests.mesh_parity float64 > diffs.json

Prints JSON: the device count, the dtypes of the state after the steps, and per tensor of params
and batch_stats the norms ||state_all - state_one||, ||state_one - initial|| and ||state_one||.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from configs import sgd
from jaxresnet import models, optimizers, parallel, steps

NUM_STEPS = 3
BATCH_SIZE = 8
SOURCE_SIZE = 16  # Resized to config.image_size = 32 inside the step.
NUM_CLASSES = 10


def run(mesh: Mesh, dtype: jnp.dtype) -> tuple[dict, dict]:
  """(initial variables, variables after NUM_STEPS steps of the jitted step over `mesh`)."""
  # The paper's recipe (SGD lr 0.001, momentum 0.9, weight decay 1e-4) at 32x32.
  config = sgd.get_config()
  config.image_size = 32
  config.batch_size = BATCH_SIZE
  model = models.create_model(config.model, NUM_CLASSES, dtype)
  variables = models.init_variables(model, jax.random.key(0))
  # create_model keeps float32 parameters; float64 compute wants float64 everywhere.
  variables = jax.tree.map(lambda x: x.astype(dtype), variables)
  initial = jax.device_get(variables)
  tx = optimizers.create_optimizer(config, steps_per_epoch=100)
  state = jax.device_put(steps.create_train_state(model, variables, tx), parallel.replicated(mesh))
  train_step = parallel.jit_train_step(config, mesh)
  data = np.random.default_rng(0)
  for _ in range(NUM_STEPS):
    batch = {
      "image": data.integers(0, 256, (BATCH_SIZE, SOURCE_SIZE, SOURCE_SIZE, 3), np.uint8),
      "label": data.integers(0, NUM_CLASSES, (BATCH_SIZE,), np.int32),
    }
    state, step_metrics = train_step(
      state, jax.device_put(batch, parallel.batch_sharded(mesh)), jax.random.key(1)
    )
    assert step_metrics["loss"].dtype == dtype, step_metrics["loss"].dtype
  final = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  return initial, final


def compare(dtype_name: str) -> dict:
  dtype = jnp.dtype(dtype_name)
  all_devices = parallel.create_mesh()
  one_device = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
  initial, on_one = run(one_device, dtype)
  _, on_all = run(all_devices, dtype)
  tensors = {}
  for (path, p0), p1, pn in zip(
    jax.tree_util.tree_leaves_with_path(initial),
    jax.tree.leaves(on_one),
    jax.tree.leaves(on_all),
    strict=True,
  ):
    p0, p1, pn = (np.asarray(x, np.float64) for x in (p0, p1, pn))
    tensors[jax.tree_util.keystr(path)] = {
      "diff": float(np.linalg.norm(pn - p1)),
      "update": float(np.linalg.norm(p1 - p0)),
      "norm": float(np.linalg.norm(p1)),
    }
  return {
    "devices": all_devices.size,
    "dtypes": sorted({str(x.dtype) for x in jax.tree.leaves([on_one, on_all])}),
    "tensors": tensors,
  }


if __name__ == "__main__":
  print(json.dumps(compare(sys.argv[1])))
