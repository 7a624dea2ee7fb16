"""Orbax checkpoints of a run: the latest N in `checkpoints/`, the best on validation in `best/`.

Each checkpoint holds the whole TrainState (parameters, optimizer state, BatchNorm statistics,
step) and a small JSON describing the model, so a workdir of another model is refused instead
of being overwritten. The best checkpoint is chosen on the validation split only, never test.
"""

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

LATEST_DIR = "checkpoints"
BEST_DIR = "best"


def create_managers(workdir: pathlib.Path, keep: int) -> dict[str, ocp.CheckpointManager]:
  """{"latest": keeps the last `keep` checkpoints, "best": keeps the best one by val accuracy}."""
  options = {
    "latest": ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    "best": ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda metrics: metrics["val_accuracy"], best_mode="max", create=True
    ),
  }
  dirs = {"latest": LATEST_DIR, "best": BEST_DIR}
  return {
    name: ocp.CheckpointManager(
      workdir.absolute() / dirs[name], options=options[name], item_names=("state", "model")
    )
    for name in dirs
  }


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


def check_compatible(manager: ocp.CheckpointManager, model_info: dict) -> None:
  """Refuses a workdir whose checkpoints belong to another model (before anything is written)."""
  step = manager.latest_step()
  if step is None:
    return
  saved = read_model_info(manager, step)
  different = {k: (saved.get(k), v) for k, v in model_info.items() if saved.get(k) != v}
  if different:
    details = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in different.items())
    raise ValueError(
      f"{manager.directory} holds checkpoints of another model ({details}). Use a new --workdir, "
      "or delete that one to start over; nothing was overwritten."
    )


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
