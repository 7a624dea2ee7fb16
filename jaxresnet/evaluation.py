"""Evaluators: a model's loss, accuracy, confusion matrix and probabilities on one split, every
example once.

An evaluator is built once per split and reused every epoch. It works on model variables
({"params", "batch_stats"}), so training, the `evaluate` CLI and anything else can use it without
an optimizer or a train state.
"""

from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from jaxresnet import models, parallel
from jaxresnet.data import dataset as dataset_lib

# "loss", "accuracy" (floats), "confusion_matrix" (int [K, K]), and each example's
# "probabilities" (float [N, K]) and "labels" (int [N]), in the split's order.
Results = dict[str, Any]


class Abandoned(Exception):
  """The evaluation stopped between two batches, on request."""


class Evaluator:
  """Evaluates variables on split `spec` of `dataset`, batch by batch with a jitted `eval_step`."""

  def __init__(self, dataset: dataset_lib.Dataset, spec: str, eval_step: Callable,
               mesh: jax.sharding.Mesh):  # fmt: skip
    self.spec = spec
    self._dataset, self._step, self._mesh = dataset, eval_step, mesh

  def __call__(self, variables: dict, stop: Callable[[], bool] = lambda: False) -> Results:
    """Variables replicated over the mesh -> the split's results, on the host.

    Raises:
      Abandoned: when `stop()` turns true, checked before every batch.
    """
    totals = None
    for batch in self._dataset.eval_batches(self.spec):
      if stop():
        raise Abandoned(self.spec)
      batch_metrics = self._step(variables, parallel.to_global(batch, self._mesh))
      totals = batch_metrics if totals is None else totals.merge(batch_metrics)
    computed = jax.device_get(totals.compute())
    predictions = computed["predictions"]
    kept = predictions["mask"].astype(bool)  # Not the last batch's padding.
    return {"loss": float(computed["loss"]), "accuracy": float(computed["accuracy"]),
            "confusion_matrix": computed["confusion_matrix"],
            "probabilities": predictions["probabilities"][kept],
            "labels": predictions["labels"][kept]}  # fmt: skip


def create_evaluators(
  config: ml_collections.ConfigDict,
  dataset: dataset_lib.Dataset,
  model: models.ResNet,
  mesh: jax.sharding.Mesh,
) -> dict[str, Evaluator]:
  """{"val": config.val_split (if set), "test": config.eval_split}, in the order they report."""
  eval_step = parallel.jit_eval_step(model, config, mesh)  # One compilation for every split.
  splits = {"val": config.val_split, "test": config.eval_split}
  return {name: Evaluator(dataset, spec, eval_step, mesh) for name, spec in splits.items() if spec}
