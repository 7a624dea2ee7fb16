"""A training run's folder: what it holds, under which names, and reading it back.

    WORKDIR/config.json                the run's config, as launched
    WORKDIR/metrics.jsonl              every logged record, one JSON object per line
    WORKDIR/events.out.tfevents.*      the same records for TensorBoard
    WORKDIR/checkpoints/, best/        Orbax checkpoints (see `checkpointing`)
    WORKDIR/curves.png, curves_last10.png, confusion_matrix.png, per_class_accuracy.txt

The metrics file is also the run's history: figures are redrawn from it after every epoch, and
after a resume it is cut back to the restored step so that no step is counted twice.
"""

import json
import pathlib
from collections.abc import Sequence

import ml_collections
import numpy as np

from jaxresnet import figures, reporting

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LATEST_DIR = "checkpoints"
BEST_DIR = "best"
PER_CLASS_TABLE = "per_class_accuracy.txt"
EPOCH_KEYS = ("train_epoch/", "test/", "val/")  # Prefixes of the end-of-epoch records.


def write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n")


def load_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The config the run was trained with."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(
      f"{path} is missing: is {workdir} a training workdir? Pass the --workdir given to "
      "`python -m jaxresnet.train`."
    )
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def checkpoint_dir(workdir: pathlib.Path, which: str) -> pathlib.Path:
  """`checkpoints/` for "latest" (and step numbers), `best/` for "best"."""
  return pathlib.Path(workdir).absolute() / (BEST_DIR if which == "best" else LATEST_DIR)


def is_training_workdir(path: pathlib.Path) -> bool:
  return (pathlib.Path(path) / LATEST_DIR).is_dir()


def read_history(workdir: pathlib.Path, up_to_step: int | None = None) -> list[dict]:
  """The metrics file's records; with `up_to_step`, drops later ones and rewrites the file."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  if up_to_step is not None:
    records = [r for r in records if r["step"] <= up_to_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return records


def last_epoch_results(workdir: pathlib.Path) -> dict[str, float]:
  """The last end-of-epoch record of the run, as `train.train_and_evaluate` returns it."""
  epochs = [r for r in read_history(workdir) if any(k.startswith(EPOCH_KEYS) for k in r)]
  last = epochs[-1] if epochs else {}
  return {k: v for k, v in last.items() if k.startswith(EPOCH_KEYS)}


def write_epoch_report(
  workdir: pathlib.Path, confusion: np.ndarray, class_names: Sequence[str], epoch: int
) -> None:
  """The curves (from the metrics file), the test confusion matrix and the per-class table."""
  history = read_history(workdir)
  figures.plot_curves(history, workdir / "curves.png")
  figures.plot_curves(history, workdir / "curves_last10.png", last_epochs=10)
  title = f"test confusion matrix, epoch {epoch}"
  figures.plot_confusion_matrix(confusion, class_names, workdir / "confusion_matrix.png", title)
  (workdir / PER_CLASS_TABLE).write_text(reporting.per_class_table(confusion, class_names) + "\n")
