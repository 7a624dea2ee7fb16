"""Evaluates a trained run: `python -m jaxresnet.evaluate --workdir DIR [--checkpoint best]`.

Prints the loss, accuracy and per-class accuracy on a split (the run's eval split by default),
and writes the confusion matrix as text and PNG next to the checkpoints.
"""

import json
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from jaxresnet import checkpointing, input_pipeline, models, optimizers, parallel, reporting, steps

FLAGS = flags.FLAGS


def evaluate_split(
  eval_step: Callable,
  state: steps.TrainState,
  config: ml_collections.ConfigDict,
  split: str,
  mesh: jax.sharding.Mesh,
) -> dict[str, Any]:
  """Loss, accuracy and confusion matrix over every example of `split`, exactly once."""
  totals = None
  for batch in input_pipeline.eval_batches(config, split):
    batch_metrics = eval_step(state, parallel.to_global(batch, mesh))
    totals = batch_metrics if totals is None else totals.merge(batch_metrics)
  return jax.device_get(totals.compute())


def load_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The config the run was trained with (written by the train loop)."""
  path = workdir / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: is {workdir} a training workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def evaluate_checkpoint(workdir: pathlib.Path, which: str, split: str | None) -> dict:
  """Loss, accuracy and confusion matrix of checkpoint `which` on `split`."""
  config = load_config(workdir)
  variables, info, step = checkpointing.load_trained(workdir, which)
  model = models.create_model(info["model"], info["num_classes"], models.DTYPES[config.dtype])
  mesh = parallel.create_mesh()
  state = steps.create_train_state(model, variables, optimizers.create_optimizer(config, 1))
  state = jax.device_put(state, parallel.replicated(mesh))
  split = split or config.eval_split
  computed = evaluate_split(parallel.jit_eval_step(config, mesh), state, config, split, mesh)
  return {**computed, "step": step, "split": split, "class_names": info["class_names"]}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdir = pathlib.Path(FLAGS.workdir)
  result = evaluate_checkpoint(workdir, FLAGS.checkpoint, FLAGS.split)
  confusion = np.asarray(result["confusion_matrix"])
  name = f"{result['split']}_step{result['step']}".replace("[", "_").replace(":", "-")
  name = "".join(c for c in name if c.isalnum() or c in "_-%")
  title = f"{result['split']} confusion matrix, step {result['step']}"
  png = workdir / f"confusion_matrix_{name}.png"
  reporting.plot_confusion_matrix(confusion, result["class_names"], png, title)
  logging.info("Wrote %s", png)
  loss, accuracy = float(result["loss"]), 100 * float(result["accuracy"])
  print(f"{FLAGS.checkpoint} checkpoint (step {result['step']}) on {result['split']}: "
        f"loss {loss:.4f}, accuracy {accuracy:.2f}%")  # fmt: skip
  print(reporting.format_table(confusion, result["class_names"]))
  print("confusion matrix (rows: true, columns: predicted):")
  print(confusion)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A training workdir.")
  flags.DEFINE_string("checkpoint", "latest", "latest, best (chosen on validation) or a step.")
  flags.DEFINE_string("split", None, "Split to evaluate; default: the run's config.eval_split.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
