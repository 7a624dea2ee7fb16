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
import numpy as np
from absl import flags, logging
from jax.experimental import multihost_utils

from jaxresnet import (
  checkpointing,
  cli,
  distributed,
  errors,
  evaluation,
  losses,
  metric_writers,
  models,
  optimizers,
  parallel,
  preemption,
  pretrained,
  reporting,
  scores,
  steps,
)
from jaxresnet import workdir as workdir_lib
from jaxresnet.data import dataset as dataset_lib
from jaxresnet.data import transforms


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails on a bad value before anything is read or written, naming the field and the fix."""
  choices = {"model": models.MODELS, "dtype": models.DTYPES, "optimizer": optimizers.OPTIMIZERS,
             "lr_schedule": optimizers.SCHEDULES, "freeze": models.FREEZE,
             "batchnorm": models.BATCHNORM, "transforms": transforms.PRESETS}  # fmt: skip
  for field, allowed in choices.items():
    if config[field] not in allowed:
      raise errors.UserError(
        f"Unknown config.{field}={config[field]!r}: choose one of {sorted(allowed)}."
      )
  positive = ("batch_size", "eval_batch_size", "num_epochs", "image_size", "learning_rate",
              "log_every_steps", "keep_checkpoints")  # fmt: skip
  for field in positive:
    if not config[field] > 0:
      raise errors.UserError(f"config.{field} must be positive, got {config[field]!r}.")
  if config.backbone_lr_multiplier < 0:
    raise errors.UserError(
      f"config.backbone_lr_multiplier must be >= 0, got {config.backbone_lr_multiplier}."
    )
  transforms.from_config(config)  # Checks the crop ranges, eval_resize, source_image_size.
  pretrained.resolve(config.init_from)  # A missing init_from directory fails here.


def check_num_classes(config: ml_collections.ConfigDict, info: dataset_lib.DatasetInfo) -> None:
  if config.num_classes and config.num_classes != info.num_classes:
    raise errors.UserError(
      f"config.num_classes={config.num_classes} but {config.dataset} has {info.num_classes} "
      f"classes; set --config.num_classes={info.num_classes} (or 0 to take the data set's)."
    )


def initial_variables(
  config: ml_collections.ConfigDict, model: models.ResNet, num_classes: int, rng: jax.Array
) -> tuple[pretrained.Variables, dict[str, Any]]:
  """Converted weights (converting torchvision's first if needed), else a scratch init.

  Returns:
    The variables, and the converter's metadata of the weights ({} from scratch).
  """
  if not config.init_from:
    return models.init_variables(model, rng), {}
  directory = pretrained.resolve(config.init_from) or pretrained.convert_torchvision(
    config.model, config.init_from, num_classes, config.seed, config.weights_cache_dir
  )
  metadata = pretrained.load_metadata(directory)
  if (metadata["arch"], metadata["num_classes"]) != (config.model, num_classes):
    raise errors.UserError(
      f"{directory} holds a {metadata['arch']} with {metadata['num_classes']} classes, but the run "
      f"needs a {config.model} with {num_classes}: convert with --arch {config.model} "
      f"--num-classes {num_classes}."
    )
  logging.info("Initialising from %s (%s)", directory, metadata["source"])
  return pretrained.load_variables(directory), metadata


def create_state(
  config: ml_collections.ConfigDict,
  model: models.ResNet,
  tx: Any,
  model_info: dict[str, Any],
  manager: Any,
  workdir: pathlib.Path,
  mesh: jax.sharding.Mesh,
  rng: jax.Array,
) -> tuple[steps.TrainState, dict[str, Any]]:
  """The workdir's newest intact checkpoint, else a fresh state, replicated over the mesh.

  Returns:
    The state, and `model_info` completed with the BatchNorm counters of the starting weights
    and the shorter side evaluation resizes to (`transforms.eval_resize`, which may come from
    the starting weights).
  """
  replicated = parallel.replicated(mesh)
  shapes = jax.eval_shape(
    lambda: steps.create_train_state(model, models.init_variables(model, rng), tx)
  )
  abstract_state = checkpointing.abstract(shapes, replicated)
  restored = checkpointing.restore_intact(manager, workdir, abstract_state, model_info)
  if restored is not None:
    state, saved = restored
    logging.info("Resuming from %s, step %d", manager.directory, int(jax.device_get(state.step)))
    weights = {"num_batches_tracked": saved.get("num_batches_tracked", {})}
    resize = saved.get("eval_resize") or transforms.eval_resize(config)  # Older checkpoints.
  else:
    variables, weights = initial_variables(config, model, model_info["num_classes"], rng)
    state = jax.device_put(steps.create_train_state(model, variables, tx), replicated)
    resize = transforms.eval_resize(config, weights)
  return state, {**model_info, "num_batches_tracked": weights.get("num_batches_tracked", {}),
                 "eval_resize": resize}  # fmt: skip


def check_config_changes(
  config: ml_collections.ConfigDict, workdir: pathlib.Path, allow: bool
) -> dict[str, tuple]:
  """The fields changed since the first launch; refuses protected ones unless `allow`.

  A field missing from an older config.json compares as its value in configs/default.py, where
  that is importable (beside this repository's config files); elsewhere as its value now.
  """
  try:
    from configs import default  # noqa: PLC0415

    defaults = default.get_config()
  except ImportError:
    defaults = config
  changes = workdir_lib.config_changes(workdir, config, defaults)
  protected = workdir_lib.protected_changes(changes, config)
  if protected and not allow:
    details = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in protected)
    raise errors.UserError(
      f"{workdir} was first launched with another config ({details}). Relaunch with the first "
      f"config ({workdir / workdir_lib.CONFIG_FILE}), or pass --allow_config_change to resume "
      "with these changes (recorded in launches.jsonl), or use a new --workdir."
    )
  return changes


def check_finite(train: dict[str, float], first: int, last: int, workdir: pathlib.Path) -> None:
  """Stops a diverged run before the loop can checkpoint its state."""
  bad = {k: v for k, v in train.items() if not math.isfinite(v)}
  if bad:
    raise errors.Diverged(
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
  stop: preemption.StopRequest


def stopped(run: Run, step: int) -> errors.Stopped:
  return errors.Stopped(
    f"Stopped by {run.stop.name} at step {step}, its checkpoint saved in "
    f"{run.managers['latest'].directory}: relaunch the same command to resume.",
    run.stop.exit_code,
  )


def end_epoch(
  run: Run, state: steps.TrainState, train: dict[str, float] | None, step: int, epoch: int
) -> dict[str, float]:
  """Checkpoints the epoch, evaluates every eval split, reports, and redraws the figures.

  The checkpoint comes first, so that a stop request, which abandons the evaluation (raising
  `errors.Stopped`), loses nothing: the relaunched run evaluates that epoch again. `train` is
  None for such a repeated evaluation.
  """
  results = {}
  if train is not None:
    checkpointing.save(run.managers["latest"], state, run.model_info)
    results = {f"train_epoch/{k}": train[k] for k in ("loss", "accuracy")}
    run.progress.write(step, {**results, "epoch": epoch})
  variables = steps.variables_of(state)
  try:
    computed = {name: evaluate(variables, run.stop.pending) for name, evaluate in
                run.evaluators.items()}  # fmt: skip
  except evaluation.Abandoned:
    raise stopped(run, step) from None
  evaluated = {}
  for name, split in computed.items():
    split.update(scores.one_vs_rest(split["probabilities"], split["labels"]))  # Once per split.
    summary = scores.summary(split["confusion_matrix"], split["auc"], run.model_info["class_names"])
    split_record = {"loss": split["loss"], "accuracy": split["accuracy"], **summary}
    evaluated.update({f"{name}/{k}": v for k, v in split_record.items()})
  run.progress.log_epoch(step, epoch, evaluated, train_results=results)
  if "val" in computed:  # Selection on validation only, never on test.
    val = {"val_accuracy": evaluated["val/accuracy"]}
    checkpointing.save(run.managers["best"], state, run.model_info, val)
  if jax.process_index() == 0 and "test" in computed:
    workdir_lib.write_epoch_report(run.workdir, computed["test"], run.model_info["class_names"],
                                   epoch)  # fmt: skip
  return {**results, **evaluated}


def evaluation_pending(workdir: pathlib.Path, step: int, steps_per_epoch: int) -> bool:
  """Whether the run stopped at an epoch's end before evaluating it (process 0 decides)."""
  epoch, rest = divmod(step, steps_per_epoch)
  pending = bool(step) and not rest and jax.process_index() == 0
  pending = pending and epoch not in workdir_lib.evaluated_epochs(workdir)
  if jax.process_count() > 1:
    pending = bool(multihost_utils.broadcast_one_to_all(np.asarray(pending)))
  return pending


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False
) -> dict[str, float]:
  """Trains `config.num_epochs` epochs (resuming if the workdir has checkpoints).

  Args:
    config: the run's config.
    workdir: where checkpoints, metrics and figures go; one run at a time.
    allow_config_change: resume even if fields other than the operational ones changed since
      the first launch (`workdir.OPERATIONAL_FIELDS`).

  Returns:
    The last epoch's results: "train_epoch/loss", "test/accuracy", ... (and "val/...").

  Raises:
    errors.Stopped: after saving, on SIGTERM or Ctrl-C.
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
  class_weights = losses.resolve_class_weights(config.class_weights,
                                               info.class_counts[config.train_split])  # fmt: skip
  steps_per_epoch = info.num_examples[config.train_split] // config.batch_size
  num_steps = config.num_epochs * steps_per_epoch

  with workdir_lib.locked(workdir, primary=jax.process_index() == 0):
    # Model and state: the workdir's checkpoint, else converted weights, else scratch.
    model = models.create_model(config.model, info.num_classes, config.dtype, config.freeze,
                                config.batchnorm)  # fmt: skip
    tx = optimizers.create_optimizer(config, steps_per_epoch)
    model_info = {"model": config.model, "num_classes": info.num_classes,
                  "class_names": list(info.class_names), "optimizer": config.optimizer,
                  **{k: config[k] for k in optimizers.LAYOUT_DEFAULTS}}  # fmt: skip
    managers = checkpointing.create_managers(workdir, config.keep_checkpoints)
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    state, model_info = create_state(config, model, tx, model_info, managers["latest"], workdir,
                                     mesh, init_rng)  # fmt: skip
    start_step = int(jax.device_get(state.step))
    changes = check_config_changes(config, workdir, allow_config_change)  # After the model's.
    dataset = dataset.prepared(model_info["eval_resize"])  # Image caches built before step 1.

    # Jitted steps over the mesh: training, and one evaluator per eval split.
    train_step = parallel.jit_train_step(config, mesh, class_weights)
    evaluators = evaluation.create_evaluators(config, dataset, model, mesh)

    # Reporting.
    writer = metric_writers.create_writer(workdir, start_step)
    if jax.process_index() == 0:
      workdir_lib.record_launch(workdir, config, changes)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    logging.info("%s, %s parameters: %d steps (%d epochs of %d), global batch %d on %d devices, "
                 "from step %d", config.model, f"{num_params:,}", num_steps, config.num_epochs,
                 steps_per_epoch, config.batch_size, mesh.size, start_step)  # fmt: skip
    if start_step == 0:
      writer.write_scalars(0, {"num_params": num_params})
    progress = reporting.Progress(writer, num_steps, steps_per_epoch, config.batch_size,
                                  start_step)  # fmt: skip

    with preemption.StopRequest(managers["latest"]) as stop:
      run = Run(config, workdir, managers, model_info, evaluators, progress, stop)
      try:
        results = train_loop(run, state, dataset, train_step, train_rng, mesh, start_step,
                             num_steps, steps_per_epoch)  # fmt: skip
      finally:  # Also when stopped or diverged: saves in flight complete, records reach disk.
        for manager in managers.values():
          manager.wait_until_finished()
        writer.close()

  if not results:  # The workdir already held a finished run: report its last epoch.
    results = workdir_lib.last_epoch_results(workdir)
  table = workdir / workdir_lib.PER_CLASS_TABLE
  if jax.process_index() == 0 and table.exists():
    logging.info("Final test results (epoch %d):\n%s", config.num_epochs, table.read_text())
  return results


def train_loop(run: Run, state: steps.TrainState, dataset: dataset_lib.Dataset, train_step: Any,
               rng: jax.Array, mesh: jax.sharding.Mesh, start_step: int, num_steps: int,
               steps_per_epoch: int) -> dict[str, float]:  # fmt: skip
  """One loop over steps: a log line every log_every_steps; a checkpoint every
  checkpoint_every_steps, at each epoch's end (with evaluation and figures) and when stopped.

  Returns:
    The last epoch's results, {} if no epoch ended.
  """
  config, results = run.config, {}
  learning_rate = optimizers.create_learning_rate(config, steps_per_epoch)
  if evaluation_pending(run.workdir, start_step, steps_per_epoch):  # Stopped while evaluating.
    results = end_epoch(run, state, None, start_step, start_step // steps_per_epoch)
  meter, window_start = reporting.Meter(), start_step
  batches = dataset.train_batches(start_step)
  for step in range(start_step + 1, num_steps + 1):
    state, step_metrics = train_step(state, parallel.to_global(next(batches), mesh), rng)
    meter.add(step_metrics)
    end_of_epoch, stopping = step % steps_per_epoch == 0, run.stop.at_step(step)
    every = config.checkpoint_every_steps
    checkpoint = end_of_epoch or stopping or bool(every and step % every == 0)
    if checkpoint or step % config.log_every_steps == 0:
      train = meter.window()
      check_finite(train, window_start, step, run.workdir)  # Before a checkpoint can save NaNs.
      run.progress.log_step(step, train, float(learning_rate(step - 1)))  # The step's own rate.
      window_start = step
    if end_of_epoch:
      run.progress.pause()  # Evaluation is not training time.
      results = end_epoch(run, state, meter.epoch(), step, step // steps_per_epoch)
      run.progress.resume()
    elif checkpoint:
      run.progress.flush()  # The logs of a killed run then reach its last checkpoint.
      checkpointing.save(run.managers["latest"], state, run.model_info)
    if stopping:
      raise stopped(run, step)
  return results


def define_flags() -> None:
  cli.define_workdir_flag("Directory for checkpoints, metrics and figures.")
  cli.define_config_flag("Training config file, e.g. configs/sgd.py.")
  flags.DEFINE_bool("allow_config_change", False, "Resume although fields other than the "
                    "operational ones changed since the first launch.")  # fmt: skip
  distributed.define_flags()


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise errors.UserError(
      f"Unexpected arguments {argv[1:]}: train takes flags only, e.g. --config.num_epochs=3."
    )
  cli.quiet_libraries()
  config = cli.FLAGS.config
  batch_sizes = (config.batch_size, config.eval_batch_size)
  parallel.split_cpu(parallel.cpu_device_count(config.cpu_devices, config.image_size, batch_sizes))
  distributed.initialize_from_flags()
  train_and_evaluate(config, cli.FLAGS.workdir, cli.FLAGS.allow_config_change)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
