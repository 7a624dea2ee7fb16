"""What a person watching a run sees: one line per log step, one per epoch, and the tables.

Reporting only reports: when to log, evaluate or checkpoint, and what to do about a diverged run,
is the train loop's to decide.
"""

import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

import jax
import numpy as np
from absl import logging

from jaxresnet import figures, metrics, scores

if TYPE_CHECKING:
  from jaxresnet import metric_writers


class Meter:
  """Averages the train step's metrics over the current log window and over the epoch."""

  def __init__(self):
    self._window = self._epoch = None

  def add(self, step_metrics: Mapping[str, jax.Array]) -> None:
    new = metrics.TrainMetrics.single_from_model_output(**step_metrics)
    self._window = new if self._window is None else self._window.merge(new)
    self._epoch = new if self._epoch is None else self._epoch.merge(new)

  def window(self) -> dict[str, float]:
    """The averages since the last call (waits for the device), then starts a new window."""
    values = {k: float(v) for k, v in self._window.compute().items()}
    self._window = None
    return values

  def epoch(self) -> dict[str, float]:
    """The epoch's averages (since the resume, if it resumed mid-epoch); starts a new epoch."""
    values = {k: float(v) for k, v in self._epoch.compute().items()}
    self._epoch = None
    return values


class Progress:
  """Writes the step and epoch records and logs them as one line each, with rates and the ETA.

  The clock runs only while training: evaluation time is paused out of images/s and the ETA.
  """

  def __init__(self, writer: "metric_writers.MultiWriter", num_steps: int, steps_per_epoch: int,
               batch_size: int, start_step: int):  # fmt: skip
    self._writer, self._num_steps = writer, num_steps
    self._steps_per_epoch, self._batch_size = steps_per_epoch, batch_size
    self._last_step, self._elapsed = start_step, 0.0
    self._epoch_start = time.perf_counter()
    self.resume()

  def resume(self) -> None:
    self._tick = time.perf_counter()

  def pause(self) -> None:
    self._elapsed += time.perf_counter() - self._tick

  def log_step(self, step: int, train: Mapping[str, float], learning_rate: float) -> None:
    """One record and one line: step/total, epoch, loss, accuracy, lr, images/s, ETA."""
    self.pause()
    steps_per_sec = (step - self._last_step) / max(self._elapsed, 1e-9)
    images_per_sec = steps_per_sec * self._batch_size
    epoch = step / self._steps_per_epoch
    record = {f"train/{k}": v for k, v in train.items()}
    record.update({"lr": learning_rate, "train/images_per_sec": images_per_sec, "epoch": epoch})
    self._writer.write_scalars(step, record)
    eta = format_duration((self._num_steps - step) / steps_per_sec)
    num_epochs = self._num_steps // self._steps_per_epoch
    logging.info(
      "step %d/%d (epoch %.2f/%d) | loss %.4f | accuracy %.2f%% | lr %.3g | %.0f images/s | "
      "ETA %s", step, self._num_steps, epoch, num_epochs, train["loss"], 100 * train["accuracy"],
      learning_rate, images_per_sec, eta,
    )  # fmt: skip
    self._last_step, self._elapsed = step, 0.0
    self.resume()

  def write(self, step: int, record: Mapping[str, float]) -> None:
    self._writer.write_scalars(step, record)

  def flush(self) -> None:
    self._writer.flush()

  def log_epoch(self, step: int, epoch: int, evaluated: Mapping[str, float],
                train_results: Mapping[str, float]) -> None:  # fmt: skip
    """The evaluation's record, and a line: every split's loss and accuracy, the epoch's time.

    `train_results` (written already, before the evaluation) only join the line.
    """
    self._writer.write_scalars(step, {**evaluated, "epoch": epoch})
    self._writer.flush()
    results = {**train_results, **evaluated}
    now = time.perf_counter()
    order = list(figures.EPOCH_SPLITS)
    splits = sorted({key.split("/")[0] for key in results}, key=order.index)
    parts = [
      f"{split.removesuffix('_epoch')} loss {results[f'{split}/loss']:.4f}, accuracy "
      f"{100 * results[f'{split}/accuracy']:.2f}%"
      for split in splits
    ]
    num_epochs = self._num_steps // self._steps_per_epoch
    logging.info("epoch %d/%d | %s | %s", epoch, num_epochs, " | ".join(parts),
                 format_duration(now - self._epoch_start))  # fmt: skip
    self._epoch_start = now


class ImageProgress:
  """One line of images done/total, images/s and the ETA, for `predict`: rewritten in place on a
  terminal (at most 5 times a second), else appended every 30 s (a log). A context manager that
  ends with a final line, also on an error, so that an error message starts a line of its own.
  """

  def __init__(self, total: int, stream: TextIO = sys.stderr, live: bool | None = None):
    """`live`: rewrite the line in place; by default when `stream` is a terminal."""
    self._total, self._stream = total, stream
    self._live = stream.isatty() if live is None else live
    self._done = 0
    self._start = self._shown = time.perf_counter()

  def __enter__(self) -> "ImageProgress":
    return self

  def update(self, count: int) -> None:
    """`count` more images done."""
    self._done += count
    now = time.perf_counter()
    if now - self._shown >= (0.2 if self._live else 30.0):
      self._shown = now
      rate = self._done / (now - self._start)
      eta = (self._total - self._done) / rate if rate else math.inf
      self._show(f"ETA {format_duration(eta)}", rate)

  def __exit__(self, *exc_info) -> None:
    elapsed = time.perf_counter() - self._start
    self._show(f"took {format_duration(elapsed)}", self._done / max(elapsed, 1e-9))
    if self._live:
      self._stream.write("\n")
    self._stream.flush()

  def _show(self, timing: str, rate: float) -> None:
    line = f"{self._done}/{self._total} images | {rate:.0f} images/s | {timing}"
    self._stream.write(f"\r{line}\033[K" if self._live else f"{line}\n")
    self._stream.flush()


def per_class_table(
  confusion: np.ndarray, class_names: Sequence[str], auc: np.ndarray | None = None
) -> str:
  """Each class's accuracy (its recall), counts, precision, F1 and one-vs-rest AUC as aligned
  text; the overall accuracy, then the macro scores an imbalanced data set is judged by.
  """
  classes = scores.per_class(confusion)
  auc = np.full(len(class_names), np.nan) if auc is None else np.asarray(auc)
  width = max(len("overall"), *(len(n) for n in class_names))
  lines = [f"{'class':<{width}}  accuracy  correct / total  precision       F1     AUC"]
  rows = zip(class_names, np.diag(confusion), classes["support"], classes["precision"],
             classes["f1"], auc, strict=True)  # fmt: skip
  for name, correct, total, precision, f1, class_auc in rows:
    accuracy = _percent(correct / total if total else np.nan)
    lines.append(f"{name:<{width}}  {accuracy}  {correct:>7} / {total:<5}  {_percent(precision)}  "
                 f"{_percent(f1)}  {_fraction(class_auc)}")  # fmt: skip
  overall = np.trace(confusion) / max(1, confusion.sum())
  lines.append(f"{'overall':<{width}}  {_percent(overall)}  {np.trace(confusion):>7} / "
               f"{confusion.sum()}")  # fmt: skip
  macro = {"balanced accuracy": _percent(scores.balanced_accuracy(confusion)),
           "macro precision": _percent(scores.macro(classes["precision"])),
           "macro F1": _percent(scores.macro(classes["f1"])),
           "macro AUC (one vs rest)": _fraction(scores.macro(auc))}  # fmt: skip
  lines.append("")
  lines += [f"{name:<24} {value.strip()}" for name, value in macro.items()]
  return "\n".join(lines)


def _percent(value: float) -> str:
  return "       -" if np.isnan(value) else f"{100 * value:7.2f}%"


def _fraction(value: float) -> str:
  return "     -" if np.isnan(value) else f"{value:.4f}"


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
