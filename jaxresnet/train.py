"""Fine-tunes a ResNet: `python -m jaxresnet.train --config configs/sgd.py --workdir DIR`.

The state comes from, in this order: the workdir's latest checkpoint (so relaunching the same
command resumes), else `config.init_from` (converted torchvision weights), else scratch.
Evaluation runs on the whole eval split after every epoch; metrics go to TensorBoard and
`metrics.jsonl`, figures to PNGs in the workdir.
"""

import dataclasses
import logging as std_logging
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from jaxresnet import (
  checkpointing,
  distributed,
  evaluate,
  input_pipeline,
  models,
  optimizers,
  parallel,
  pretrained,
  reporting,
  steps,
)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails on a bad value before anything is read or written, naming the field and the fix."""
  choices = {"model": models.MODELS, "dtype": models.DTYPES, "optimizer": optimizers.OPTIMIZERS,
             "lr_schedule": optimizers.SCHEDULES}  # fmt: skip
  for field, allowed in choices.items():
    if config[field] not in allowed:
      raise ValueError(
        f"Unknown config.{field}={config[field]!r}: choose one of {sorted(allowed)}."
      )
  positive = ("batch_size", "eval_batch_size", "num_epochs", "image_size", "learning_rate",
              "log_every_steps", "keep_checkpoints")  # fmt: skip
  for field in positive:
    if not config[field] > 0:
      raise ValueError(f"config.{field} must be positive, got {config[field]!r}.")
  pretrained.resolve(config.init_from)  # A missing init_from directory fails here.


def init_scratch(
  config: ml_collections.ConfigDict, model: models.ResNet, rng: jax.Array
) -> pretrained.Variables:
  """torchvision's initialisation, in one compiled call instead of ~150 small ones."""
  images = jnp.zeros((1, config.image_size, config.image_size, 3))
  return jax.jit(model.init, static_argnames="train")(rng, images, train=False)


def initial_variables(
  config: ml_collections.ConfigDict, model: models.ResNet, num_classes: int, rng: jax.Array
) -> pretrained.Variables:
  """Converted weights (converting torchvision's first if needed), else a scratch init."""
  if not config.init_from:
    return init_scratch(config, model, rng)
  directory = pretrained.resolve(config.init_from) or pretrained.convert_torchvision(
    config.model, config.init_from, num_classes, config.seed, config.weights_cache_dir
  )
  metadata = pretrained.load_metadata(directory)
  if (metadata["arch"], metadata["num_classes"]) != (config.model, num_classes):
    raise ValueError(
      f"{directory} holds a {metadata['arch']} with {metadata['num_classes']} classes, but the run "
      f"needs a {config.model} with {num_classes}: convert with --arch {config.model} "
      f"--num-classes {num_classes}."
    )
  logging.info("Initialising from %s (%s)", directory, metadata["source"])
  return pretrained.load_variables(directory)


def create_state(
  config: ml_collections.ConfigDict,
  model: models.ResNet,
  tx: Any,
  num_classes: int,
  manager: Any,
  mesh: jax.sharding.Mesh,
  rng: jax.Array,
) -> steps.TrainState:
  """The workdir's latest checkpoint, else a fresh state; replicated over the mesh."""
  replicated = parallel.replicated(mesh)
  if manager.latest_step() is not None:
    logging.info("Resuming from %s, step %d", manager.directory, manager.latest_step())
    shapes = jax.eval_shape(
      lambda: steps.create_train_state(model, init_scratch(config, model, rng), tx)
    )
    return checkpointing.restore(manager, checkpointing.abstract(shapes, replicated))
  variables = initial_variables(config, model, num_classes, rng)
  return jax.device_put(steps.create_train_state(model, variables, tx), replicated)


@dataclasses.dataclass(frozen=True)
class Run:
  """What every end of epoch needs: where to write, what to evaluate on, the checkpointers."""

  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  mesh: jax.sharding.Mesh
  managers: dict[str, Any]
  model_info: dict[str, Any]
  writer: Any


def end_epoch(
  run: Run,
  state: steps.TrainState,
  eval_step: Callable,
  train: dict[str, float],
  step: int,
  epoch: int,
) -> dict[str, float]:
  """Evaluates the test (and val) split, writes the results, checkpoints, redraws the figures."""
  config = run.config
  results = {f"train_epoch_{k}": v for k, v in train.items() if k in ("loss", "accuracy")}
  splits = {"test": config.eval_split, "val": config.val_split}
  confusion = None
  for name, split in splits.items():
    if split:
      computed = evaluate.evaluate_split(eval_step, state, config, split, run.mesh)
      results[f"{name}_epoch_loss"] = float(computed["loss"])
      results[f"{name}_epoch_accuracy"] = float(computed["accuracy"])
      confusion = np.asarray(computed["confusion_matrix"]) if name == "test" else confusion
  logging.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
  run.writer.write_scalars(step, {**results, "epoch": epoch})
  run.writer.flush()
  checkpointing.save(run.managers["latest"], state, run.model_info)
  if config.val_split:  # Selection on validation only, never on test.
    val = {"val_accuracy": results["val_epoch_accuracy"]}
    checkpointing.save(run.managers["best"], state, run.model_info, val)
  if jax.process_index() == 0:
    reporting.write_figures(run.workdir, confusion, run.model_info["class_names"], epoch)
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.num_epochs` epochs (resuming if the workdir has checkpoints).

  Returns:
    The last epoch's results: train, test (and val) loss and accuracy.
  """
  workdir = pathlib.Path(workdir)
  validate_config(config)

  # Data: the mesh decides how each global batch is split.
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.batch_size, mesh, "batch_size")
  parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  info = input_pipeline.get_info(config)
  if config.num_classes and config.num_classes != info.num_classes:
    raise ValueError(
      f"config.num_classes={config.num_classes} but {config.dataset} has {info.num_classes} "
      f"classes; set --config.num_classes={info.num_classes} (or 0 to take the data set's)."
    )
  steps_per_epoch = info.num_train // config.batch_size
  num_steps = config.num_epochs * steps_per_epoch

  # Model and state: checkpoint, else converted weights, else scratch.
  model = models.create_model(config.model, info.num_classes, models.DTYPES[config.dtype])
  tx = optimizers.create_optimizer(config, steps_per_epoch)
  # What a workdir's checkpoints must match to be resumed (the optimizer fixes the state's tree).
  model_info = {"model": config.model, "num_classes": info.num_classes,
                "class_names": list(info.class_names), "optimizer": config.optimizer}  # fmt: skip
  managers = checkpointing.create_managers(workdir, config.keep_checkpoints)
  checkpointing.check_compatible(managers["latest"], model_info)
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  state = create_state(config, model, tx, info.num_classes, managers["latest"], mesh, init_rng)
  start_step = int(jax.device_get(state.step))

  # Jitted steps over the mesh.
  train_step = parallel.jit_train_step(config, mesh)
  eval_step = parallel.jit_eval_step(config, mesh)

  # Logging.
  writer = reporting.create_writer(workdir, start_step)
  run = Run(config, workdir, mesh, managers, model_info, writer)
  progress = reporting.TrainProgress(
    writer, config, steps_per_epoch, num_steps, start_step, workdir
  )
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
  logging.info("%d steps (%d epochs of %d), global batch %d on %d devices, from step %d",
               num_steps, config.num_epochs, steps_per_epoch, config.batch_size, mesh.size,
               start_step)  # fmt: skip

  # One loop over steps; evaluation, a checkpoint and figures at each epoch's end.
  batches = input_pipeline.train_batches(config, info, start_step)
  results = {}
  for step in range(start_step + 1, num_steps + 1):
    batch = parallel.to_global(next(batches), mesh)
    state, step_metrics = train_step(state, batch, train_rng)
    progress.update(step, step_metrics)
    if step % steps_per_epoch == 0:
      train = progress.end_epoch()
      results = end_epoch(run, state, eval_step, train, step, step // steps_per_epoch)
      progress.resume_clock()  # Evaluation is not training time.
    elif config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
      writer.flush()  # The logs of a killed run then reach its last checkpoint.
      checkpointing.save(managers["latest"], state, model_info)

  # Final save and flush.
  for manager in managers.values():
    manager.wait_until_finished()
  writer.close()
  if not results:  # The workdir already held a finished run: report its last epoch.
    results = reporting.last_epoch_results(workdir)
  if jax.process_index() == 0 and (workdir / "per_class_accuracy.txt").exists():
    logging.info("Final test results (epoch %d):\n%s", config.num_epochs,
                 (workdir / "per_class_accuracy.txt").read_text())  # fmt: skip
  return results


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process runs (docs/multihost.md); unset values come from the cluster, as JAX detects it.
flags.DEFINE_enum("distributed", "auto", distributed.MODES,
                  "auto: multi-process when the flags below are given, JAX_COORDINATOR_ADDRESS is "
                  "set, or under SLURM / Open MPI (> 1 task) or on a Cloud TPU VM; on: always "
                  "(JAX detects the cluster); off: never.")  # fmt: skip
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, reachable by all.")
flags.DEFINE_integer("num_processes", None, "How many processes take part in the run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Orbax logs every checkpoint operation at INFO; keep its warnings, drop the chatter.
  logging.get_absl_handler().addFilter(
    lambda record: record.levelno >= std_logging.WARNING or "orbax" not in record.pathname
  )
  distributed.initialize(
    FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
  )
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
