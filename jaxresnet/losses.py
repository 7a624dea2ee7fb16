"""The training loss, torch.nn.CrossEntropyLoss's, with its label smoothing and class weights.

torch's weighted mean is not a mean over examples: with `weight=w` it divides the summed,
weighted losses by the batch's summed target weights, sum_i w[y_i], and label smoothing spreads
the weights too (each class c's share of the smoothed target counts w[c]). `weighted_loss`
computes exactly that, so `class_weights` changes the objective as it would in torch.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxresnet import errors

CLASS_WEIGHTS = ("none", "balanced")  # Or "w1,w2,...,wK".


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy, as torch.nn.CrossEntropyLoss(label_smoothing=...) computes it."""
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def weighted_loss(
  logits: jax.Array,
  labels: jax.Array,
  label_smoothing: float = 0.0,
  class_weights: jax.Array | np.ndarray | None = None,
) -> jax.Array:
  """The batch's loss as torch.nn.CrossEntropyLoss(weight=class_weights, label_smoothing=...).

  Without weights, the mean of `cross_entropy`.
  """
  if class_weights is None:
    return jnp.mean(cross_entropy(logits, labels, label_smoothing))
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  weights = jnp.asarray(class_weights, logits.dtype)
  losses = -jnp.sum(targets * weights * jax.nn.log_softmax(logits), axis=-1)
  return jnp.sum(losses) / jnp.sum(weights[labels])


def resolve_class_weights(spec: str, class_counts: Sequence[int]) -> np.ndarray | None:
  """config.class_weights as one weight per class, from the training split's class counts.

  "balanced" is scikit-learn's n / (k * n_c): every class then carries the same total weight.
  """
  counts = np.asarray(class_counts, np.float64)
  if spec == "none":
    return None
  if spec == "balanced":
    if not counts.all():
      empty = np.flatnonzero(counts == 0).tolist()
      raise errors.UserError(
        f"config.class_weights='balanced' needs examples of every class in the training split; "
        f"classes {empty} have none. Give explicit weights, or add examples of those classes."
      )
    return (counts.sum() / (len(counts) * counts)).astype(np.float32)
  try:
    weights = np.array([float(w) for w in spec.split(",")], np.float32)
  except ValueError:
    weights = None
  if weights is None or len(weights) != len(counts) or (weights < 0).any() or not weights.any():
    example = ",".join(["1"] * len(counts))
    raise errors.UserError(
      f"config.class_weights={spec!r} is not 'none', 'balanced' or {len(counts)} non-negative "
      f"comma-separated numbers, not all zero (one per class, e.g. {example})."
    )
  return weights
