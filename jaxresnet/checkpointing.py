"""Orbax checkpoints of a run: the latest N in `checkpoints/`, the best on validation in `best/`.

Each checkpoint holds the whole TrainState (parameters, optimizer state, BatchNorm statistics,
step) and a small JSON describing the model, so a workdir of another model is refused instead
of being overwritten. The best checkpoint is chosen on the validation split only, never test.
"""

import pathlib
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from jaxresnet import errors, optimizers
from jaxresnet import workdir as workdir_lib

# The model-info fields a workdir's checkpoints must match to be resumed (the optimizer and the
# fine-tuning controls fix the state's tree); the others (BatchNorm counters at the start)
# describe the run.
IDENTITY = ("model", "num_classes", "class_names", "optimizer", *optimizers.LAYOUT_DEFAULTS)


def create_managers(workdir: pathlib.Path, keep: int) -> dict[str, ocp.CheckpointManager]:
  """{"latest": keeps the last `keep` checkpoints, "best": keeps the best one by val accuracy}."""
  options = {
    "latest": ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    "best": ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda metrics: metrics["val_accuracy"], best_mode="max", create=True
    ),
  }
  return {
    name: ocp.CheckpointManager(
      workdir_lib.checkpoint_dir(workdir, name), options=options[name],
      item_names=("state", "model"),
    )
    for name in options
  }  # fmt: skip


def save(
  manager: ocp.CheckpointManager,
  state: Any,
  model_info: dict,
  metrics: dict[str, float] | None = None,
) -> None:
  step = int(jax.device_get(state.step))
  manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), model=ocp.args.JsonSave(model_info)
    ),
    metrics=metrics,
  )


def restore_intact(manager: ocp.CheckpointManager, workdir: pathlib.Path, abstract_state: Any,
                   model_info: dict) -> tuple[Any, dict] | None:  # fmt: skip
  """(state, model info) of the newest checkpoint that restores whole, or None if there is none.

  Each checkpoint's model info is read and compared with `model_info` first (`check_compatible`:
  another model's checkpoints are refused, untouched). Then its state is restored in full before
  the run trusts it. One that fails (a disk fault, an interrupted copy) is named in the log and
  moved to WORKDIR/damaged/, never deleted, and the one before it is tried.

  Raises:
    UserError: for another model's checkpoints, or when checkpoints exist but none is intact;
      nothing is overwritten then.
  """
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      saved = manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore())).model
    except Exception as error:  # Orbax and json raise many types for bad files.
      damaged.append(_move_aside(manager, workdir, step, error))
      continue
    check_compatible(saved, model_info, manager.directory)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))  # fmt: skip
      return restored.state, saved
    except Exception as error:  # Orbax and tensorstore raise many types for bad files.
      damaged.append(_move_aside(manager, workdir, step, error))
  if damaged:
    raise errors.UserError(
      f"No intact checkpoint in {manager.directory}: every one failed to restore and was moved to "
      f"{workdir / workdir_lib.DAMAGED_DIR}. Nothing was overwritten; repair and move them back, "
      "or train in a new --workdir."
    )
  return None


def _move_aside(
  manager: ocp.CheckpointManager, workdir: pathlib.Path, step: int, error: Exception
) -> pathlib.Path:
  """Moves a damaged checkpoint out of the manager's sight (process 0), then reloads it."""
  source = pathlib.Path(manager.directory) / str(step)
  stamp = time.strftime("%Y%m%dT%H%M%S")
  target = workdir.absolute() / workdir_lib.DAMAGED_DIR / f"{source.parent.name}-{step}-{stamp}"
  logging.warning("Checkpoint %s is damaged (%s: %.300s); moving it to %s and trying the one "
                  "before.", source, type(error).__name__, error, target)  # fmt: skip
  if jax.process_index() == 0:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"jaxresnet: moved checkpoint {step} aside")
  manager.reload()
  return target


def check_compatible(saved: dict, model_info: dict, directory: pathlib.Path) -> None:
  """Refuses checkpoints of another model (before anything is written): the `IDENTITY` fields."""
  saved = {**optimizers.LAYOUT_DEFAULTS, **saved}  # Checkpoints from before those fields.
  different = {k: (saved.get(k), model_info[k]) for k in IDENTITY if saved.get(k) != model_info[k]}
  if different:
    details = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in different.items())
    raise errors.UserError(
      f"{directory} holds checkpoints of another model ({details}). Use a new --workdir, "
      "or delete that one to start over; nothing was overwritten."
    )


def abstract(state: Any, sharding: jax.sharding.Sharding) -> Any:
  """Shapes, dtypes and the target sharding of `state`, for restoring into it."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def load_trained(workdir: pathlib.Path, which: str = "latest") -> tuple[dict, dict, int]:
  """({"params", "batch_stats"}, model info, step) of a training run, for inference or export.

  The model info holds the architecture, classes and optimizer, and `num_batches_tracked`: torch's
  BatchNorm counters of the weights the run started from, which an export advances by the step.

  Args:
    workdir: a training workdir.
    which: "latest", "best" (chosen on validation; needs config.val_split) or a step number.
  """
  workdir = pathlib.Path(workdir)
  if not workdir_lib.is_training_workdir(workdir):
    raise errors.UserError(
      f"{workdir} is not a training workdir (no {workdir_lib.LATEST_DIR}/ in it): pass the "
      "--workdir given to `python -m jaxresnet.train`."
    )
  directory = workdir_lib.checkpoint_dir(workdir, which)
  handlers = {"state": ocp.StandardCheckpointHandler(), "model": ocp.JsonCheckpointHandler()}
  manager = ocp.CheckpointManager(directory, item_handlers=handlers)
  if which in ("latest", "best"):
    step = manager.best_step() if which == "best" else manager.latest_step()
  elif which.isdigit() and int(which) in manager.all_steps():
    step = int(which)
  else:
    raise errors.UserError(
      f"No checkpoint {which!r} in {directory}: use latest, best or one of {manager.all_steps()}."
    )
  if step is None:
    hint = " (best needs a run with config.val_split)" if which == "best" else ""
    raise errors.UserError(f"{directory} holds no checkpoint{hint}.")
  # Onto one local device, whatever devices and processes wrote it (Orbax refuses to restore
  # onto another topology without a target): a multi-host run's checkpoint loads on a laptop.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    target = abstract(manager.item_metadata(step).state, device)
  except Exception as error:  # A damaged or missing metadata file.
    raise errors.UserError(
      f"Checkpoint {directory / str(step)} is damaged (its metadata: {type(error).__name__}: "
      f"{error}"[:600]
      + f"). Pick another with --checkpoint (one of {manager.all_steps()})."
    ) from error
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), model=ocp.args.JsonRestore()))  # fmt: skip
  except Exception as error:  # Orbax, tensorstore and json raise many types for bad files.
    raise errors.UserError(
      f"Checkpoint {directory / str(step)} is damaged ({type(error).__name__}: {error}"[:600]
      + f"). Pick another with --checkpoint (one of {manager.all_steps()})."
    ) from error
  variables = {k: restored.state[k] for k in ("params", "batch_stats")}
  return variables, restored.model, step
