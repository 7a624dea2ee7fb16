"""Orbax checkpoints of a run: the latest N in `checkpoints/`, the best on validation in `best/`.

Each checkpoint holds the whole TrainState (parameters, optimizer state, BatchNorm statistics,
step) and a small JSON describing the model, so a workdir of another model is refused instead
of being overwritten. The best checkpoint is chosen on the validation split only, never test.
"""

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxresnet import workdir as workdir_lib

# The model-info fields a workdir's checkpoints must match to be resumed (the optimizer fixes the
# state's tree); the others (BatchNorm counters at the start) describe the run.
IDENTITY = ("model", "num_classes", "class_names", "optimizer")


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


def read_model_info(manager: ocp.CheckpointManager, step: int) -> dict:
  """The JSON saved beside a checkpoint's state: what model it belongs to."""
  return manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore())).model


def check_compatible(manager: ocp.CheckpointManager, model_info: dict) -> dict | None:
  """The latest checkpoint's model info, or None; refuses one of another model (writing nothing).

  Only the `IDENTITY` fields are compared.
  """
  step = manager.latest_step()
  if step is None:
    return None
  saved = read_model_info(manager, step)
  different = {k: (saved.get(k), model_info[k]) for k in IDENTITY if saved.get(k) != model_info[k]}
  if different:
    details = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in different.items())
    raise ValueError(
      f"{manager.directory} holds checkpoints of another model ({details}). Use a new --workdir, "
      "or delete that one to start over; nothing was overwritten."
    )
  return saved


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> Any:
  """The state at `step` (default: latest), laid out like `abstract_state`'s shardings."""
  step = manager.latest_step() if step is None else step
  restored = manager.restore(
    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
  )
  return restored.state


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
    raise FileNotFoundError(
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
    raise ValueError(
      f"No checkpoint {which!r} in {directory}: use latest, best or one of {manager.all_steps()}."
    )
  if step is None:
    hint = " (best needs a run with config.val_split)" if which == "best" else ""
    raise FileNotFoundError(f"{directory} holds no checkpoint{hint}.")
  # Onto one local device, whatever devices and processes wrote it (Orbax refuses to restore
  # onto another topology without a target): a multi-host run's checkpoint loads on a laptop.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = abstract(manager.item_metadata(step).state, device)
  restored = manager.restore(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardRestore(target), model=ocp.args.JsonRestore()),
  )
  variables = {k: restored.state[k] for k in ("params", "batch_stats")}
  return variables, restored.model, step
