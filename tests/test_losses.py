"""The training loss against torch.nn.CrossEntropyLoss, with class weights and label smoothing.

In float64 on random logits: torch's weighted mean divides by the batch's summed target
weights, and its label smoothing spreads the class weights too; the two agree to rounding
(<= 1e-12 relative). `balanced` weights are scikit-learn's `compute_class_weight("balanced")`.
"""

import jax
import numpy as np
import pytest
import torch
from sklearn.utils import class_weight

from jaxresnet import errors, losses

NUM_CLASSES = 7


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_equals_torch_cross_entropy(weighted, label_smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=3.0, size=(64, NUM_CLASSES))
  labels = rng.choice(NUM_CLASSES, size=64, p=[0.4, 0.3, 0.1, 0.1, 0.05, 0.04, 0.01])
  weights = rng.uniform(0.2, 5.0, NUM_CLASSES) if weighted else None
  criterion = torch.nn.CrossEntropyLoss(
    weight=None if weights is None else torch.from_numpy(weights), label_smoothing=label_smoothing
  )
  expected = criterion(torch.from_numpy(logits), torch.from_numpy(labels)).item()
  with jax.enable_x64(True):  # Jitted, with the weights a constant, as the train step has them.
    loss = jax.jit(lambda x, y: losses.weighted_loss(x, y, label_smoothing, weights))
    ours = float(loss(logits, labels))
  print(f"\nweighted={weighted}, smoothing={label_smoothing}: {ours!r} vs torch {expected!r}")
  assert ours == pytest.approx(expected, rel=1e-12)
  unweighted = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
  plain_mean = unweighted(torch.from_numpy(logits), torch.from_numpy(labels)).item()
  assert (abs(ours - plain_mean) > 1e-3) == weighted  # The weights do change the loss.


def test_balanced_weights_are_scikit_learns():
  labels = np.repeat(np.arange(4), [500, 50, 200, 5])
  expected = class_weight.compute_class_weight("balanced", classes=np.arange(4), y=labels)
  ours = losses.resolve_class_weights("balanced", np.bincount(labels))
  np.testing.assert_allclose(ours, expected, rtol=1e-6)  # float32 weights.
  assert losses.resolve_class_weights("none", [3, 4]) is None
  np.testing.assert_array_equal(losses.resolve_class_weights("1, 2.5", [3, 4]), [1.0, 2.5])


@pytest.mark.parametrize(
  "spec, counts, words",
  [
    ("balanced", [10, 0, 5], "classes [1] have none"),
    ("1,2", [10, 5, 5], "3 non-negative comma-separated numbers"),
    ("1,-2,3", [10, 5, 5], "non-negative"),
    ("0,0", [10, 5], "not all zero"),  # The loss would divide by zero.
    ("heavy", [10, 5], "'none', 'balanced'"),
  ],
)
def test_bad_class_weights_name_the_fix(spec, counts, words):
  with pytest.raises(errors.UserError, match=words.replace("[", r"\[").replace("]", r"\]")):
    losses.resolve_class_weights(spec, counts)
