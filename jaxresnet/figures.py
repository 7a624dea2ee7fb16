"""The run's figures as PNGs: the paper's loss and accuracy curves per epoch and confusion
matrix, and the one-vs-rest ROC and precision-recall curves imbalanced classes call for."""

import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # Files only; never a display.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from jaxresnet import scores  # noqa: E402

# The end-of-epoch records' prefixes ("train_epoch/loss", "val/accuracy", ...), in report order,
# and each one's curve label.
EPOCH_SPLITS = {"train_epoch": "train", "val": "val", "test": "test"}
MAX_CURVE_CLASSES = 20  # Beyond this, one curve per class is unreadable.


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
    for prefix, label in EPOCH_SPLITS.items():
      epochs, values = epoch_series(history, f"{prefix}/{metric}")
      if last_epochs:
        start = max(0.0, (epochs[-1] if epochs else 0) - last_epochs)
        values = [v for e, v in zip(epochs, values, strict=True) if e > start]
        epochs = [e for e in epochs if e > start]
      if epochs:
        ax.plot(epochs, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # Epochs are whole numbers.
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


def plot_one_vs_rest_curves(probabilities: np.ndarray, labels: np.ndarray,
                            class_names: Sequence[str], areas: Mapping[str, np.ndarray],
                            directory: pathlib.Path, suffix: str,
                            title: str) -> list[pathlib.Path]:  # fmt: skip
  """directory/roc{suffix}.png and precision_recall{suffix}.png, for up to `MAX_CURVE_CLASSES`.

  `areas` is `scores.one_vs_rest` of the same predictions, for the legends.

  Returns:
    The files written; none beyond `MAX_CURVE_CLASSES` classes.
  """
  if len(class_names) > MAX_CURVE_CLASSES:
    return []
  paths = []
  for kind, name in (("roc", "ROC"), ("precision_recall", "precision-recall")):
    paths.append(directory / f"{kind}{suffix}.png")
    _plot_one_vs_rest(probabilities, labels, class_names, areas, kind, paths[-1],
                      f"{name} curves, one class vs the rest: {title}")  # fmt: skip
  return paths


def _plot_one_vs_rest(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                      areas: Mapping[str, np.ndarray], kind: str, path: pathlib.Path,
                      title: str) -> None:  # fmt: skip
  """Each class's ROC ("roc") or precision-recall ("precision_recall") curve against the rest,
  its AUC or average precision in the legend."""
  fig, ax = plt.subplots(figsize=(7, 6))
  for c, name in enumerate(class_names):
    positive = labels == c
    if positive.all() or not positive.any():  # Undefined: one side is empty.
      continue
    if kind == "roc":
      x, y = scores.roc_curve(probabilities[:, c], positive)
      ax.plot(x, y, label=f"{name} (AUC {areas['auc'][c]:.3f})")
    else:
      y, x = scores.precision_recall_curve(probabilities[:, c], positive)
      ax.step(x, y, where="post", label=f"{name} (AP {areas['average_precision'][c]:.3f})")
  if kind == "roc":
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)  # Chance.
  names = {"roc": ("false positive rate", "true positive rate"),
           "precision_recall": ("recall", "precision")}  # fmt: skip
  ax.set_xlabel(names[kind][0])
  ax.set_ylabel(names[kind][1])
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
