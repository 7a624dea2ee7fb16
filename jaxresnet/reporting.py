"""What a run shows people: a JSON-lines metrics file, the paper's figures as PNGs, a table.

The metrics file is also the run's history: plots are redrawn from it after every epoch, and
after a resume it is cut back to the restored step so no step is counted twice.
"""

import json
import math
import pathlib
import time
from collections.abc import Mapping, Sequence

import jax
import matplotlib

matplotlib.use("Agg")  # Files only; never a display.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from clu import metric_writers, periodic_actions  # noqa: E402

from jaxresnet import metrics  # noqa: E402

METRICS_FILE = "metrics.jsonl"


class JsonlWriter(metric_writers.MetricWriter):
  """A clu MetricWriter that appends one JSON object per write_scalars call."""

  def __init__(self, path: pathlib.Path):
    # Line-buffered: a killed run leaves whole records on disk, up to its last logged step.
    self._file = open(path, "a", buffering=1)  # noqa: SIM115  (kept open for the whole run)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def read_history(workdir: pathlib.Path, up_to_step: int | None = None) -> list[dict]:
  """The metrics file's records; with `up_to_step`, drops later ones and rewrites the file."""
  path = workdir / METRICS_FILE
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  if up_to_step is not None:
    records = [r for r in records if r["step"] <= up_to_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return records


def epoch_series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
  """(epochs, values) of every record holding `key` (records carry an "epoch" field)."""
  points = [(r["epoch"], r[key]) for r in history if key in r and "epoch" in r]
  return [p[0] for p in points], [p[1] for p in points]


def plot_curves(
  history: Sequence[dict], path: pathlib.Path, last_epochs: int | None = None
) -> None:
  """Loss and accuracy per epoch for train, val and test (the paper's Figs. 4 and 5)."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
    for split in ("train", "val", "test"):
      epochs, values = epoch_series(history, f"{split}_epoch_{metric}")
      if last_epochs:
        start = max(0.0, (epochs[-1] if epochs else 0) - last_epochs)
        values = [v for e, v in zip(epochs, values, strict=True) if e > start]
        epochs = [e for e in epochs if e > start]
      if epochs:
        ax.plot(epochs, values, marker="o", markersize=3, label=split)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
  title = f"last {last_epochs} epochs" if last_epochs else "training curves"
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_confusion_matrix(
  confusion: np.ndarray, class_names: Sequence[str], path: pathlib.Path, title: str
) -> None:
  """Counts with true classes as rows (the paper's Fig. 6)."""
  size = max(5.0, 0.6 * len(class_names))
  fig, ax = plt.subplots(figsize=(size + 1, size))
  image = ax.imshow(confusion, cmap="Blues")
  fig.colorbar(image, ax=ax)
  ticks = range(len(class_names))
  ax.set_xticks(ticks, class_names, rotation=45, ha="right")
  ax.set_yticks(ticks, class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title)
  if len(class_names) <= 20:
    threshold = confusion.max() / 2
    for (i, j), count in np.ndenumerate(confusion):
      color = "white" if count > threshold else "black"
      ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def format_table(confusion: np.ndarray, class_names: Sequence[str]) -> str:
  """Per-class accuracy and counts as aligned text, overall accuracy last."""
  totals = confusion.sum(axis=1)
  width = max(len("overall"), *(len(n) for n in class_names))
  lines = [f"{'class':<{width}}  accuracy  correct / total"]
  for name, correct, total in zip(class_names, np.diag(confusion), totals, strict=True):
    accuracy = f"{100 * correct / total:7.2f}%" if total else "      - "
    lines.append(f"{name:<{width}}  {accuracy}  {correct:>7} / {total}")
  overall = np.trace(confusion) / max(1, confusion.sum())
  lines.append(
    f"{'overall':<{width}}  {100 * overall:7.2f}%  {np.trace(confusion):>7} / {confusion.sum()}"
  )
  return "\n".join(lines)


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def create_writer(workdir: pathlib.Path, start_step: int) -> metric_writers.MetricWriter:
  """TensorBoard + metrics.jsonl + logging on process 0, logging alone on the others.

  The metrics file is first cut back to `start_step`: what a killed run logged after its last
  checkpoint is logged again by the resumed run, and must not count twice.
  """
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True, asynchronous=False)
  read_history(workdir, up_to_step=start_step)
  return metric_writers.MultiWriter(
    [
      metric_writers.create_default_writer(workdir, asynchronous=False),
      JsonlWriter(workdir / METRICS_FILE),
    ]
  )


def last_epoch_results(workdir: pathlib.Path) -> dict[str, float]:
  """The last end-of-epoch record of a finished run, as `train_and_evaluate` returns it."""
  epochs = [r for r in read_history(workdir) if any("_epoch_" in k for k in r)]
  return {k: v for k, v in (epochs[-1] if epochs else {}).items() if "_epoch_" in k}


def write_figures(
  workdir: pathlib.Path, confusion: np.ndarray, class_names: Sequence[str], epoch: int
) -> None:
  """The paper's figures from the metrics file, and the per-class table as text."""
  history = read_history(workdir)
  plot_curves(history, workdir / "curves.png")
  plot_curves(history, workdir / "curves_last10.png", last_epochs=10)
  title = f"test confusion matrix, epoch {epoch}"
  plot_confusion_matrix(confusion, class_names, workdir / "confusion_matrix.png", title)
  (workdir / "per_class_accuracy.txt").write_text(format_table(confusion, class_names) + "\n")


class TrainProgress:
  """Averages step metrics over log windows and epochs; logs steps/s, images/s and the ETA.

  Every window is checked for non-finite values before the loop can checkpoint what it holds.
  """

  def __init__(self, writer, config, steps_per_epoch: int, num_steps: int, start_step: int,
               workdir: pathlib.Path):  # fmt: skip
    self._writer, self._config, self._workdir = writer, config, workdir
    self._steps_per_epoch, self._num_steps = steps_per_epoch, num_steps
    self._window = self._epoch = None
    self._window_start = start_step
    self._report = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer, every_steps=config.log_every_steps
    )
    self.resume_clock()

  def resume_clock(self) -> None:
    self._tick = time.perf_counter()

  def update(self, step: int, step_metrics: dict[str, jax.Array]) -> None:
    new = metrics.TrainMetrics.single_from_model_output(**step_metrics)
    self._window = new if self._window is None else self._window.merge(new)
    self._epoch = new if self._epoch is None else self._epoch.merge(new)
    self._report(step)
    # Also before every mid-epoch checkpoint, so that a non-finite state is never saved.
    every_checkpoint = self._config.checkpoint_every_steps
    checkpoint = every_checkpoint and step % every_checkpoint == 0
    if step % self._config.log_every_steps == 0 or step % self._steps_per_epoch == 0 or checkpoint:
      self._log(step)

  def end_epoch(self) -> dict[str, float]:
    """The epoch's averages (since the resume, if it resumed mid-epoch)."""
    values = {k: float(v) for k, v in self._epoch.compute().items()}
    self._epoch = None
    return values

  def _log(self, step: int) -> None:
    values = {f"train_{k}": float(v) for k, v in self._window.compute().items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
      raise FloatingPointError(
        f"Training diverged between steps {self._window_start + 1} and {step}: {bad}. The last "
        f"good checkpoint in {self._workdir} is intact; lower config.learning_rate (or use a "
        "warmup) and relaunch."
      )
    now = time.perf_counter()
    steps_per_sec = (step - self._window_start) / (now - self._tick)
    images_per_sec = steps_per_sec * self._config.batch_size
    epoch = step / self._steps_per_epoch
    self._writer.write_scalars(
      step, {**values, "epoch": epoch, "train_images_per_sec": images_per_sec}
    )
    eta = format_duration((self._num_steps - step) / steps_per_sec)
    logging.info(
      "step %d/%d (epoch %.2f): loss %.4f, accuracy %.2f%% | %.2f steps/s, %.0f images/s, ETA %s",
      step, self._num_steps, epoch, values["train_loss"], 100 * values["train_accuracy"],
      steps_per_sec, images_per_sec, eta,
    )  # fmt: skip
    self._window, self._window_start, self._tick = None, step, now
