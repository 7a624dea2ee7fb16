"""CLU metric collections for training and evaluation, including the confusion matrix.

Every eval metric honours the batch mask, so the padding of the last eval batch never counts
(the collected predictions carry it, for `evaluation.Evaluator` to apply).
"""

import flax
import jax
import jax.numpy as jnp
from clu import metrics


@flax.struct.dataclass
class ConfusionMatrix(metrics.Metric):
  """Counts of (true class, predicted class) over all unmasked examples."""

  matrix: jax.Array

  @classmethod
  def from_model_output(
    cls, *, logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None, **_
  ) -> "ConfusionMatrix":
    num_classes = logits.shape[-1]
    weights = jnp.ones_like(labels) if mask is None else mask.astype(jnp.int32)
    counts = jnp.zeros((num_classes, num_classes), jnp.int32)
    return cls(matrix=counts.at[labels, jnp.argmax(logits, -1)].add(weights))

  def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
    return type(self)(matrix=self.matrix + other.matrix)

  def compute(self) -> jax.Array:
    return self.matrix


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  """A split's loss, accuracy and confusion matrix, and every example's class probabilities.

  The probabilities (for ROC AUC, `scores.one_vs_rest`) are collected on the host, batch by
  batch, as global batches: every process gets all of them, and their mask.
  """

  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy
  confusion_matrix: ConfusionMatrix
  predictions: metrics.CollectingMetric.from_outputs(("probabilities", "labels", "mask"))


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Average.from_output("accuracy")
  grad_norm: metrics.Average.from_output("grad_norm")
  param_norm: metrics.LastValue.from_output("param_norm")
