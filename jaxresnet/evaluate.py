"""Evaluates a trained run: `python -m jaxresnet.evaluate --workdir DIR [--checkpoint best]`.

Prints the loss, accuracy and per-class scores on a split (the run's eval split by default), and
writes the confusion matrix (and, up to 20 classes, the ROC and precision-recall curves) as PNGs
in the workdir. `--dataset imagefolder:PATH --split S` evaluates another folder, which must have
the run's class folders.
"""

import pathlib

import jax
from absl import flags, logging

from jaxresnet import (
  checkpointing,
  cli,
  errors,
  evaluation,
  figures,
  models,
  parallel,
  reporting,
  scores,
)
from jaxresnet import workdir as workdir_lib
from jaxresnet.data import dataset as dataset_lib
from jaxresnet.data import transforms
from jaxresnet.data.sources import IMAGEFOLDER


def evaluate_checkpoint(
  workdir: pathlib.Path, which: str, split: str | None, dataset: str | None = None
) -> dict:
  """Loss, accuracy and confusion matrix of checkpoint `which` on `split`, with its step.

  Args:
    dataset: another data set than the run's ("imagefolder:PATH"), with the run's class names.
  """
  config = workdir_lib.load_config(workdir)
  variables, info, step = checkpointing.load_trained(workdir, which)
  split = split or config.eval_split
  if dataset:
    config.dataset = dataset
  resize = info.get("eval_resize") or transforms.eval_resize(config)  # Older checkpoints.
  data = dataset_lib.create_dataset(config, [split]).prepared(resize)
  check_class_names(tuple(info["class_names"]), data.info.class_names, config.dataset)
  model = models.create_model(info["model"], info["num_classes"], config.dtype)
  mesh = parallel.create_mesh()
  eval_step = parallel.jit_eval_step(model, config, mesh)
  evaluator = evaluation.Evaluator(data, split, eval_step, mesh)
  results = evaluator(jax.device_put(variables, parallel.replicated(mesh)))
  return {**results, "step": step, "split": split, "class_names": info["class_names"]}


def check_class_names(trained: tuple[str, ...], found: tuple[str, ...], dataset: str) -> None:
  """Refuses a data set whose classes (their labels' order) are not the run's."""
  if trained == found:
    return
  missing, extra = sorted(set(trained) - set(found)), sorted(set(found) - set(trained))
  difference = (
    f"it lacks {missing} and has {extra} in their place"
    if missing or extra
    else "the same names in another order"
  )
  raise errors.UserError(
    f"{dataset} has the classes {list(found)}, the run {list(trained)}: {difference}. Rename its "
    "class folders to the run's class names (one folder per class the run was trained on)."
  )


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise errors.UserError(
      f"Unexpected arguments {argv[1:]}: evaluate takes flags only, e.g. --checkpoint best."
    )
  cli.quiet_libraries()
  workdir = pathlib.Path(cli.FLAGS.workdir)
  config = workdir_lib.load_config(workdir)
  requested = config.get("cpu_devices", 0)  # Runs from before the field: 0.
  count = parallel.cpu_device_count(requested, config.image_size, [config.eval_batch_size])
  parallel.split_cpu(count)
  dataset = cli.FLAGS.dataset
  result = evaluate_checkpoint(workdir, cli.FLAGS.checkpoint, cli.FLAGS.split, dataset)
  confusion = result["confusion_matrix"]
  # Another data set's figures are named after its folder, beside the run's own.
  prefix = f"{pathlib.Path(dataset.removeprefix(IMAGEFOLDER)).name}_" if dataset else ""
  name = f"{prefix}{result['split']}_step{result['step']}".replace("[", "_").replace(":", "-")
  name = "".join(c for c in name if c.isalnum() or c in "_-%")
  title = f"{result['split']} confusion matrix, step {result['step']}"
  class_names = result["class_names"]
  pngs = [workdir / f"confusion_matrix_{name}.png"]
  figures.plot_confusion_matrix(confusion, class_names, pngs[0], title)
  areas = scores.one_vs_rest(result["probabilities"], result["labels"])
  pngs += figures.plot_one_vs_rest_curves(result["probabilities"], result["labels"], class_names,
                                          areas, workdir, f"_{name}",
                                          f"{result['split']}, step {result['step']}")  # fmt: skip
  logging.info("Wrote %s", ", ".join(map(str, pngs)))
  print(f"{cli.FLAGS.checkpoint} checkpoint (step {result['step']}) on {result['split']}: "
        f"loss {result['loss']:.4f}, accuracy {100 * result['accuracy']:.2f}%")  # fmt: skip
  print(reporting.per_class_table(confusion, class_names, areas["auc"]))
  print("confusion matrix (rows: true, columns: predicted):")
  print(confusion)


def define_flags() -> None:
  cli.define_workdir_flag()
  cli.define_checkpoint_flag()
  flags.DEFINE_string("split", None, "Split to evaluate; default: the run's config.eval_split.")
  flags.DEFINE_string("dataset", None, "imagefolder:PATH: another folder with the run's classes "
                      "(PATH/<split>/<class>/); default: the run's dataset.")  # fmt: skip


if __name__ == "__main__":
  define_flags()
  cli.run(main)
