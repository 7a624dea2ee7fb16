"""Fine-tunes a ResNet: `python -m jaxresnet.train --config configs/sgd.py --workdir DIR`.

The state comes from, in this order: the workdir's latest checkpoint (so relaunching the same
command resumes), else `config.init_from` (converted torchvision weights), else scratch.
Evaluation runs on the whole eval (and val) split after every epoch; metrics go to TensorBoard
and `metrics.jsonl`, figures to PNGs in the workdir (see `jaxresnet/workdir.py`).
"""

import dataclasses
import math
import pathlib
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxresnet import (
  checkpointing,
  cli,
  distributed,
  evaluation,
  metric_writers,
  models,
  optimizers,
  parallel,
  pretrained,
  reporting,
  steps,
)
from jaxresnet import workdir as workdir_lib
from jaxresnet.data import dataset as dataset_lib


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


def check_num_classes(config: ml_collections.ConfigDict, info: dataset_lib.DatasetInfo) -> None:
  if config.num_classes and config.num_classes != info.num_classes:
    raise ValueError(
      f"config.num_classes={config.num_classes} but {config.dataset} has {info.num_classes} "
      f"classes; set --config.num_classes={info.num_classes} (or 0 to take the data set's)."
    )


def initial_variables(
  config: ml_collections.ConfigDict, model: models.ResNet, num_classes: int, rng: jax.Array
) -> tuple[pretrained.Variables, dict[str, int]]:
  """Converted weights (converting torchvision's first if needed), else a scratch init.

  Returns:
    The variables, and torch's BatchNorm counters (`num_batches_tracked`) of the weights.
  """
  if not config.init_from:
    return models.init_variables(model, rng), {}
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
  return pretrained.load_variables(directory), metadata.get("num_batches_tracked", {})


def create_state(
  config: ml_collections.ConfigDict,
  model: models.ResNet,
  tx: Any,
  model_info: dict[str, Any],
  manager: Any,
  mesh: jax.sharding.Mesh,
  rng: jax.Array,
) -> tuple[steps.TrainState, dict[str, Any]]:
  """The workdir's latest checkpoint, else a fresh state, replicated over the mesh.

  Returns:
    The state, and `model_info` completed with the BatchNorm counters of the starting weights.
  """
  replicated = parallel.replicated(mesh)
  saved = checkpointing.check_compatible(manager, model_info)
  if saved is not None:
    logging.info("Resuming from %s, step %d", manager.directory, manager.latest_step())
    shapes = jax.eval_shape(
      lambda: steps.create_train_state(model, models.init_variables(model, rng), tx)
    )
    state = checkpointing.restore(manager, checkpointing.abstract(shapes, replicated))
    counters = saved.get("num_batches_tracked", {})
  else:
    variables, counters = initial_variables(config, model, model_info["num_classes"], rng)
    state = jax.device_put(steps.create_train_state(model, variables, tx), replicated)
  return state, {**model_info, "num_batches_tracked": counters}


def check_finite(train: dict[str, float], first: int, last: int, workdir: pathlib.Path) -> None:
  """Stops a diverged run before the loop can checkpoint its state."""
  bad = {k: v for k, v in train.items() if not math.isfinite(v)}
  if bad:
    raise FloatingPointError(
      f"Training diverged between steps {first + 1} and {last}: {bad}. The last good checkpoint "
      f"in {workdir} is intact; lower config.learning_rate (or use a warmup) and relaunch."
    )


@dataclasses.dataclass(frozen=True)
class Run:
  """What every end of epoch needs: where to write, what to evaluate, the checkpointers."""

  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  managers: dict[str, Any]
  model_info: dict[str, Any]
  evaluators: dict[str, evaluation.Evaluator]
  progress: reporting.Progress


def end_epoch(
  run: Run, state: steps.TrainState, train: dict[str, float], step: int, epoch: int
) -> dict[str, float]:
  """Evaluates every eval split, reports, checkpoints, and redraws the figures."""
  results = {f"train_epoch/{k}": train[k] for k in ("loss", "accuracy")}
  variables = steps.variables_of(state)
  computed = {name: evaluate(variables) for name, evaluate in run.evaluators.items()}
  for name, split in computed.items():
    results.update({f"{name}/loss": split["loss"], f"{name}/accuracy": split["accuracy"]})
  run.progress.log_epoch(step, epoch, results)
  checkpointing.save(run.managers["latest"], state, run.model_info)
  if "val" in computed:  # Selection on validation only, never on test.
    val = {"val_accuracy": results["val/accuracy"]}
    checkpointing.save(run.managers["best"], state, run.model_info, val)
  if jax.process_index() == 0 and "test" in computed:
    confusion = computed["test"]["confusion_matrix"]
    workdir_lib.write_epoch_report(run.workdir, confusion, run.model_info["class_names"], epoch)
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.num_epochs` epochs (resuming if the workdir has checkpoints).

  Returns:
    The last epoch's results: "train_epoch/loss", "test/accuracy", ... (and "val/...").
  """
  workdir = pathlib.Path(workdir)
  validate_config(config)

  # Data: each split listed or loaded once; the mesh decides how each global batch is split.
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.batch_size, mesh, "batch_size")
  parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  splits = [config.train_split, config.eval_split, config.val_split]
  dataset = dataset_lib.create_dataset(config, splits)
  info = dataset.info
  check_num_classes(config, info)
  steps_per_epoch = info.num_examples[config.train_split] // config.batch_size
  num_steps = config.num_epochs * steps_per_epoch

  # Model and state: the workdir's checkpoint, else converted weights, else scratch.
  model = models.create_model(config.model, info.num_classes, config.dtype)
  tx = optimizers.create_optimizer(config, steps_per_epoch)
  learning_rate = optimizers.create_learning_rate(config, steps_per_epoch)
  model_info = {"model": config.model, "num_classes": info.num_classes,
                "class_names": list(info.class_names), "optimizer": config.optimizer}  # fmt: skip
  managers = checkpointing.create_managers(workdir, config.keep_checkpoints)
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  state, model_info = create_state(config, model, tx, model_info, managers["latest"], mesh,
                                   init_rng)  # fmt: skip
  start_step = int(jax.device_get(state.step))

  # Jitted steps over the mesh: training, and one evaluator per eval split.
  train_step = parallel.jit_train_step(config, mesh)
  evaluators = evaluation.create_evaluators(config, dataset, model, mesh)

  # Reporting.
  writer = metric_writers.create_writer(workdir, start_step)
  if jax.process_index() == 0:
    workdir_lib.write_config(workdir, config)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("%s, %s parameters: %d steps (%d epochs of %d), global batch %d on %d devices, "
               "from step %d", config.model, f"{num_params:,}", num_steps, config.num_epochs,
               steps_per_epoch, config.batch_size, mesh.size, start_step)  # fmt: skip
  if start_step == 0:
    writer.write_scalars(0, {"num_params": num_params})
  meter = reporting.Meter()
  progress = reporting.Progress(writer, num_steps, steps_per_epoch, config.batch_size, start_step)
  run = Run(config, workdir, managers, model_info, evaluators, progress)

  # One loop over steps; a log line every log_every_steps; evaluation, a checkpoint and figures
  # at each epoch's end, and a checkpoint every checkpoint_every_steps.
  batches = dataset.train_batches(start_step)
  window_start, results = start_step, {}
  for step in range(start_step + 1, num_steps + 1):
    state, step_metrics = train_step(state, parallel.to_global(next(batches), mesh), train_rng)
    meter.add(step_metrics)
    end_of_epoch = step % steps_per_epoch == 0
    every = config.checkpoint_every_steps
    checkpoint = end_of_epoch or bool(every and step % every == 0)
    if checkpoint or step % config.log_every_steps == 0:
      train = meter.window()
      check_finite(train, window_start, step, workdir)  # Before a checkpoint can save NaNs.
      progress.log_step(step, train, float(learning_rate(step - 1)))  # The step's own rate.
      window_start = step
    if end_of_epoch:
      progress.pause()  # Evaluation is not training time.
      results = end_epoch(run, state, meter.epoch(), step, step // steps_per_epoch)
      progress.resume()
    elif checkpoint:
      writer.flush()  # The logs of a killed run then reach its last checkpoint.
      checkpointing.save(managers["latest"], state, model_info)

  # Final save and flush.
  for manager in managers.values():
    manager.wait_until_finished()
  writer.close()
  if not results:  # The workdir already held a finished run: report its last epoch.
    results = workdir_lib.last_epoch_results(workdir)
  table = workdir / workdir_lib.PER_CLASS_TABLE
  if jax.process_index() == 0 and table.exists():
    logging.info("Final test results (epoch %d):\n%s", config.num_epochs, table.read_text())
  return results


def define_flags() -> None:
  cli.define_workdir_flag("Directory for checkpoints, metrics and figures.")
  config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
  flags.mark_flag_as_required("config")
  distributed.define_flags()


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_libraries()
  distributed.initialize_from_flags()
  train_and_evaluate(cli.FLAGS.config, cli.FLAGS.workdir)


if __name__ == "__main__":
  define_flags()
  app.run(main)
