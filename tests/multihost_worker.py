"""One process of the runs `tests/test_multihost.py` compares: float32, then float64.

1. float32: `train.train_and_evaluate` itself, for --epochs epochs in --workdir: what
   `python -m jaxresnet.train` runs once `distributed.initialize` has joined the processes.
2. float64: NUM_STEPS steps of the loop's own pieces (the input pipeline's per-process slices of
   each global batch, `to_global`, the jitted train step over a mesh of every device of every
   process) on a float64 ResNet-18. float64 through `train_and_evaluate` would need a float64
   `config.dtype`, which the loop does not offer.

Both in one process because starting one (TensorFlow, JAX, the distributed runtime) costs more
than either run. Started once per process, e.g. as process 1 of 2 with 2 CPU devices each:

    JAX_NUM_CPU_DEVICES=2 python -m tests.multihost_worker --data DIR --workdir WORKDIR \
        --epochs 2 --out OUT.npz --coordinator_address 127.0.0.1:PORT --num_processes 2 \
        --process_id 1

Process 0 writes OUT.npz: the float64 run's initial and final params and batch_stats, one array
per tensor, keyed "initial/<path>" and "final/<path>", and "devices", "processes".
"""

import argparse

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from configs import default
from jaxresnet import distributed, models, optimizers, parallel, steps, train
from jaxresnet.data import dataset as dataset_lib

NUM_STEPS = 3
# The test's tiny run, as overrides of configs/default.py (the test's CLI run passes them as
# --config flags): from scratch, SGD, global batch 8, 32x32 images as stored, metrics every step.
# Every value that shapes the trajectory is pinned here, whatever the config files say.
RUN = {
  "init_from": "",
  "optimizer": "sgd",
  "learning_rate": 0.005,
  "momentum": 0.9,
  "weight_decay": 0.0,
  "lr_schedule": "constant",
  "train_split": "train",
  "batch_size": 8,
  "eval_batch_size": 8,
  "image_size": 32,
  "prefetch_batches": 1,
  "log_every_steps": 1,
}


def run_config(data_dir: str, num_epochs: int) -> ml_collections.ConfigDict:
  """configs/default.py with RUN, on the image folder `data_dir`."""
  config = default.get_config()
  config.update({"dataset": f"imagefolder:{data_dir}", **RUN, "num_epochs": num_epochs})
  return config


def flat(tree) -> dict[str, np.ndarray]:
  """{"['params']['conv1']['kernel']": array, ...} on the host."""
  return {
    jax.tree_util.keystr(path): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))
  }


@jax.jit
def _to_float64(tree):
  """One compiled cast of the whole tree: `jax.tree.map` outside jit compiles one per shape."""
  return jax.tree.map(lambda x: x.astype(jnp.float64), tree)


def run_float64(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """NUM_STEPS float64 steps from the run's initial variables; call under jax.enable_x64."""
  data = dataset_lib.create_dataset(config, [config.train_split])
  mesh = parallel.create_mesh()
  # As train_and_evaluate draws them; create_model keeps float32 parameters, cast to float64.
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  model = models.create_model(config.model, data.info.num_classes, "float64")
  with jax.enable_x64(False):  # The float32 run's compiled init, not a float64 twin of it.
    variables = models.init_variables(model, init_rng)
  variables = _to_float64(variables)
  initial = flat(variables)
  steps_per_epoch = data.info.num_examples[config.train_split] // config.batch_size
  tx = optimizers.create_optimizer(config, steps_per_epoch)
  state = steps.create_train_state(model, variables, tx)
  state = jax.device_put(state, parallel.replicated(mesh))

  train_step = parallel.jit_train_step(config, mesh)
  batches = data.train_batches()
  for _ in range(NUM_STEPS):
    batch = parallel.to_global(next(batches), mesh)
    state, step_metrics = train_step(state, batch, train_rng)
  assert step_metrics["loss"].dtype == jnp.float64, step_metrics["loss"].dtype

  final = flat({"params": state.params, "batch_stats": state.batch_stats})
  arrays = {f"initial/{k}": v for k, v in initial.items()}
  arrays.update({f"final/{k}": v for k, v in final.items()})
  return {"devices": np.asarray(mesh.size), "processes": np.asarray(jax.process_count()), **arrays}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data", required=True, help="An image folder with train/ and test/.")
  parser.add_argument("--workdir", required=True, help="The float32 run's workdir.")
  parser.add_argument("--epochs", type=int, required=True, help="The float32 run's epochs.")
  parser.add_argument("--out", required=True, help="Where process 0 writes the float64 .npz.")
  parser.add_argument("--coordinator_address")
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  args = parser.parse_args()
  logging.set_verbosity(logging.INFO)
  distributed.initialize("auto", args.coordinator_address, args.num_processes, args.process_id)

  config = run_config(args.data, args.epochs)
  train.train_and_evaluate(config, args.workdir)
  with jax.enable_x64(True):
    arrays = run_float64(config)
  if jax.process_index() == 0:
    np.savez(args.out, **arrays)


if __name__ == "__main__":
  main()
