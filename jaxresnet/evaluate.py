"""Evaluates a trained run: `python -m jaxresnet.evaluate --workdir DIR [--checkpoint best]`.

Prints the loss, accuracy and per-class scores on a split (the run's eval split by default), and
writes the confusion matrix (and, up to 20 classes, the ROC and precision-recall curves) as PNGs
in the workdir.
"""

import pathlib

import jax
from absl import app, flags, logging

from jaxresnet import (
  checkpointing,
  cli,
  evaluation,
  figures,
  models,
  parallel,
  reporting,
  scores,
)
from jaxresnet import workdir as workdir_lib
from jaxresnet.data import dataset as dataset_lib


def evaluate_checkpoint(workdir: pathlib.Path, which: str, split: str | None) -> dict:
  """Loss, accuracy and confusion matrix of checkpoint `which` on `split`, with its step."""
  config = workdir_lib.load_config(workdir)
  variables, info, step = checkpointing.load_trained(workdir, which)
  split = split or config.eval_split
  dataset = dataset_lib.create_dataset(config, [split])
  model = models.create_model(info["model"], info["num_classes"], config.dtype)
  mesh = parallel.create_mesh()
  eval_step = parallel.jit_eval_step(model, config, mesh)
  evaluator = evaluation.Evaluator(dataset, split, eval_step, mesh)
  results = evaluator(jax.device_put(variables, parallel.replicated(mesh)))
  return {**results, "step": step, "split": split, "class_names": info["class_names"]}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_libraries()
  workdir = pathlib.Path(cli.FLAGS.workdir)
  result = evaluate_checkpoint(workdir, cli.FLAGS.checkpoint, cli.FLAGS.split)
  confusion = result["confusion_matrix"]
  name = f"{result['split']}_step{result['step']}".replace("[", "_").replace(":", "-")
  name = "".join(c for c in name if c.isalnum() or c in "_-%")
  title = f"{result['split']} confusion matrix, step {result['step']}"
  class_names = result["class_names"]
  pngs = [workdir / f"confusion_matrix_{name}.png"]
  figures.plot_confusion_matrix(confusion, class_names, pngs[0], title)
  pngs += figures.plot_one_vs_rest_curves(result["probabilities"], result["labels"], class_names,
                                          workdir, f"_{name}",
                                          f"{result['split']}, step {result['step']}")  # fmt: skip
  logging.info("Wrote %s", ", ".join(map(str, pngs)))
  print(f"{cli.FLAGS.checkpoint} checkpoint (step {result['step']}) on {result['split']}: "
        f"loss {result['loss']:.4f}, accuracy {100 * result['accuracy']:.2f}%")  # fmt: skip
  auc = scores.one_vs_rest(result["probabilities"], result["labels"])["auc"]
  print(reporting.per_class_table(confusion, class_names, auc))
  print("confusion matrix (rows: true, columns: predicted):")
  print(confusion)


def define_flags() -> None:
  cli.define_workdir_flag()
  cli.define_checkpoint_flag()
  flags.DEFINE_string("split", None, "Split to evaluate; default: the run's config.eval_split.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
