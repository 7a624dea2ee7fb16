"""Scores of a whole split, for imbalanced classes: per-class precision, recall, F1 and support,
balanced accuracy, one-vs-rest ROC AUC and average precision, and the curves behind them.

Host-side numpy on a split's confusion matrix and gathered probabilities. scikit-learn computes
the same numbers (tests/test_scores.py compares every one with it), but it is only a test
dependency: training should not pull in scikit-learn and SciPy for a few sorts and sums.
Undefined values (the precision of a class never predicted, the AUC of a class absent from the
split) are NaN, and left out of macro averages, as scikit-learn's `zero_division=np.nan` does.
"""

from collections.abc import Sequence

import numpy as np


def per_class(confusion: np.ndarray) -> dict[str, np.ndarray]:
  """{"precision", "recall", "f1", "support"} of each class, from a (true, predicted) matrix."""
  confusion = np.asarray(confusion, np.float64)
  true_positives = np.diag(confusion)
  support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
      "precision": true_positives / predicted,
      "recall": true_positives / support,
      "f1": 2 * true_positives / (support + predicted),
      "support": support.astype(np.int64),
    }


def balanced_accuracy(confusion: np.ndarray) -> float:
  """The mean recall over the classes present in the split."""
  return macro(per_class(confusion)["recall"])


def binary_curve(
  scores: np.ndarray, positive: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(false positives, true positives, thresholds) at each distinct score, highest first.

  Tied scores form one threshold, so the ROC area below counts ties as half, as the
  Mann-Whitney statistic (and scikit-learn) do.
  """
  order = np.argsort(scores, kind="stable")[::-1]
  scores, positive = scores[order], positive[order].astype(np.float64)
  last_of_each = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
  true_positives = np.cumsum(positive)[last_of_each]
  false_positives = 1 + last_of_each - true_positives
  return false_positives, true_positives, scores[last_of_each]


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(false positive rate, true positive rate), from (0, 0) to (1, 1)."""
  false_positives, true_positives, _ = binary_curve(scores, positive)
  return (np.r_[0.0, false_positives / false_positives[-1]],
          np.r_[0.0, true_positives / true_positives[-1]])  # fmt: skip


def precision_recall_curve(
  scores: np.ndarray, positive: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """(precision, recall) at each threshold, highest threshold first."""
  false_positives, true_positives, _ = binary_curve(scores, positive)
  return true_positives / (true_positives + false_positives), true_positives / true_positives[-1]


def one_vs_rest(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """Each class's ROC AUC and average precision against the rest (NaN where undefined)."""
  num_classes = probabilities.shape[1]
  auc, average_precision = np.full(num_classes, np.nan), np.full(num_classes, np.nan)
  for c in range(num_classes):
    positive = labels == c
    if positive.all() or not positive.any():
      continue
    fpr, tpr = roc_curve(probabilities[:, c], positive)
    auc[c] = np.trapezoid(tpr, fpr)
    precision, recall = precision_recall_curve(probabilities[:, c], positive)
    average_precision[c] = np.sum(np.diff(np.r_[0.0, recall]) * precision)
  return {"auc": auc, "average_precision": average_precision}


def summary(confusion: np.ndarray, auc: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
  """The scalars an epoch records for a split: macro scores, then each class's.

  Keys: "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1", "macro_auc" (`auc`
  from `one_vs_rest`), then "precision/NAME", "recall/NAME", "f1/NAME", "auc/NAME" for every
  class. Undefined values are left out, so the records hold only numbers.
  """
  classes = {**per_class(confusion), "auc": np.asarray(auc)}
  keys = ("precision", "recall", "f1", "auc")
  record = {"balanced_accuracy": balanced_accuracy(confusion)}
  record.update({f"macro_{k}": macro(classes[k]) for k in keys})
  for key in keys:
    record.update({f"{key}/{name}": float(v) for name, v in zip(class_names, classes[key],
                                                                  strict=True)})  # fmt: skip
  return {k: v for k, v in record.items() if not np.isnan(v)}


def macro(values: np.ndarray) -> float:
  """The mean over the defined (not NaN) values; NaN if none is."""
  defined = values[~np.isnan(values)]
  return float(defined.mean()) if defined.size else float("nan")
