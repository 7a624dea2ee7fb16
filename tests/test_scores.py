"""Every imbalance score jaxresnet reports (`jaxresnet/scores.py`) equals scikit-learn's.

On predictions of a deliberately imbalanced 6-class problem (one class at 2% of the examples,
one never predicted, one absent from the split), with probabilities tied in places, which is
where rank-based AUCs differ if ties are mishandled. scikit-learn's own functions on the same
numbers are the reference; every value agrees to float64 rounding (1e-12).
"""

import numpy as np
import pytest
from sklearn import metrics

from jaxresnet import reporting, scores

NUM_CLASSES, ABSENT, NEVER_PREDICTED = 6, 4, 3


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(probabilities [N, K], labels [N], predicted [N]) with the quirks of the module docstring."""
  rng = np.random.default_rng(0)
  shares = np.array([0.5, 0.3, 0.02, 0.08, 0.0, 0.1])
  labels = rng.choice(NUM_CLASSES, size=1500, p=shares)
  logits = rng.normal(size=(len(labels), NUM_CLASSES)) + 1.5 * np.eye(NUM_CLASSES)[labels]
  logits[:, NEVER_PREDICTED] -= 10
  probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  probabilities = np.round(probabilities, 2)  # Many ties, as low-precision scores have.
  probabilities /= probabilities.sum(axis=1, keepdims=True)
  predicted = probabilities.argmax(axis=1)
  assert not (predicted == NEVER_PREDICTED).any() and not (labels == ABSENT).any()
  return probabilities, labels, predicted


def confusion_of(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
  return metrics.confusion_matrix(labels, predicted, labels=range(NUM_CLASSES))


def test_per_class_precision_recall_f1_support(predictions):
  _, labels, predicted = predictions
  ours = scores.per_class(confusion_of(labels, predicted))
  theirs = metrics.precision_recall_fscore_support(
    labels, predicted, labels=range(NUM_CLASSES), zero_division=np.nan
  )
  for name, reference in zip(("precision", "recall", "f1", "support"), theirs, strict=True):
    np.testing.assert_allclose(ours[name], reference, rtol=1e-12, equal_nan=True, err_msg=name)
  assert np.isnan(ours["precision"][NEVER_PREDICTED]) and np.isnan(ours["recall"][ABSENT])


def test_balanced_accuracy_and_macro_averages(predictions):
  _, labels, predicted = predictions
  confusion = confusion_of(labels, predicted)
  with pytest.warns(UserWarning):  # scikit-learn warns about the absent class, then skips it.
    expected = metrics.balanced_accuracy_score(labels, predicted)
  assert scores.balanced_accuracy(confusion) == pytest.approx(expected, rel=1e-12)
  for average in ("precision", "recall", "f1"):
    theirs = getattr(metrics, f"{average}_score" if average != "f1" else "f1_score")(
      labels, predicted, labels=range(NUM_CLASSES), average="macro", zero_division=np.nan
    )
    ours = scores.macro(scores.per_class(confusion)[average])
    assert ours == pytest.approx(theirs, rel=1e-12), average


def test_one_vs_rest_auc_and_average_precision(predictions):
  probabilities, labels, _ = predictions
  ours = scores.one_vs_rest(probabilities, labels)
  present = [c for c in range(NUM_CLASSES) if c != ABSENT]
  for c in present:
    positive = labels == c
    auc = metrics.roc_auc_score(positive, probabilities[:, c])
    ap = metrics.average_precision_score(positive, probabilities[:, c])
    assert ours["auc"][c] == pytest.approx(auc, rel=1e-12), c
    assert ours["average_precision"][c] == pytest.approx(ap, rel=1e-12), c
  assert np.isnan(ours["auc"][ABSENT]) and np.isnan(ours["average_precision"][ABSENT])
  # Macro one-vs-rest over the classes present: scikit-learn's macro AUC of the indicator columns.
  theirs = metrics.roc_auc_score(
    np.eye(NUM_CLASSES)[labels][:, present], probabilities[:, present], average="macro"
  )
  print(f"\nmacro one-vs-rest AUC {scores.macro(ours['auc']):.6f}, scikit-learn {theirs:.6f}")
  assert scores.macro(ours["auc"]) == pytest.approx(theirs, rel=1e-12)


def test_curves_equal_scikit_learns(predictions):
  probabilities, labels, _ = predictions
  positive, score = labels == 2, probabilities[:, 2]  # The 2% class.
  fpr, tpr = scores.roc_curve(score, positive)
  their_fpr, their_tpr, _ = metrics.roc_curve(positive, score, drop_intermediate=False)
  np.testing.assert_allclose(fpr, their_fpr, rtol=1e-12)
  np.testing.assert_allclose(tpr, their_tpr, rtol=1e-12)
  precision, recall = scores.precision_recall_curve(score, positive)
  their_precision, their_recall, _ = metrics.precision_recall_curve(
    positive, score, drop_intermediate=False
  )
  # scikit-learn lists them lowest threshold first and ends with (recall 0, precision 1).
  np.testing.assert_allclose(precision, their_precision[:-1][::-1], rtol=1e-12)
  np.testing.assert_allclose(recall, their_recall[:-1][::-1], rtol=1e-12)


def test_summary_and_table_report_the_same_numbers(predictions):
  probabilities, labels, predicted = predictions
  confusion = confusion_of(labels, predicted)
  auc = scores.one_vs_rest(probabilities, labels)["auc"]
  names = [f"class{c}" for c in range(NUM_CLASSES)]
  record = scores.summary(confusion, auc, names)
  assert f"precision/class{NEVER_PREDICTED}" not in record  # Undefined: left out, not NaN.
  assert f"auc/class{ABSENT}" not in record and f"recall/class{ABSENT}" not in record
  assert all(np.isfinite(v) for v in record.values())
  table = reporting.per_class_table(confusion, names, auc).splitlines()
  lines = {line.split()[0]: line for line in table if line}
  assert lines["balanced"].split()[-1] == f"{100 * record['balanced_accuracy']:.2f}%"
  assert lines["class2"].split()[-1] == f"{record['auc/class2']:.4f}"
  assert lines["overall"].split()[1] == f"{100 * np.trace(confusion) / len(labels):.2f}%"
