"""The train state and the pure, jittable steps: one training update and one evaluation batch.

Preprocessing (resize, flips, normalisation) happens here, on the device, so the host only ever
ships uint8 images at their source size.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from jaxresnet import losses, metrics, preprocess

Batch = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """Flax's TrainState plus BatchNorm's running statistics: one object in, out and on disk."""

  batch_stats: Any


def create_train_state(model: Any, variables: dict, tx: optax.GradientTransformation) -> TrainState:
  """A step-0 state from model variables ({"params", "batch_stats"})."""
  return TrainState.create(
    apply_fn=model.apply, params=variables["params"], tx=tx, batch_stats=variables["batch_stats"]
  )


def update(
  state: TrainState,
  images: jax.Array,
  labels: jax.Array,
  label_smoothing: float = 0.0,
  class_weights: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on preprocessed images: forward, loss, backward, update, BN stats."""

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    logits, new_state = state.apply_fn(variables, images, train=True, mutable=["batch_stats"])
    loss = losses.weighted_loss(logits, labels, label_smoothing, class_weights)
    return loss, (logits, new_state["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  step_metrics = {
    "loss": loss,
    "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
    "grad_norm": optax.tree.norm(grads),
    "param_norm": optax.tree.norm(new_state.params),
  }
  return new_state, step_metrics


def train_step(
  state: TrainState,
  batch: Batch,
  rng: jax.Array,
  config: ml_collections.ConfigDict,
  class_weights: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """Preprocesses a uint8 batch with flips drawn from `rng` folded with the step, then updates."""
  step_rng = jax.random.fold_in(rng, state.step)
  images = preprocess.preprocess(batch["image"], config, rng=step_rng)
  return update(state, images, batch["label"], config.label_smoothing, class_weights)


def variables_of(state: TrainState) -> dict[str, Any]:
  """The model variables of a train state, what evaluation and inference need."""
  return {"params": state.params, "batch_stats": state.batch_stats}


def eval_logits(
  variables: dict, images: jax.Array, *, model: Any, config: ml_collections.ConfigDict
) -> jax.Array:
  """Eval-mode logits of uint8 images at their source size, preprocessed as in evaluation."""
  return model.apply(variables, preprocess.preprocess(images, config), train=False)


def eval_step(
  variables: dict, batch: Batch, *, model: Any, config: ml_collections.ConfigDict
) -> metrics.EvalMetrics:
  """Metrics of one (possibly padded) eval batch; padded examples have mask False."""
  logits = eval_logits(variables, batch["image"], model=model, config=config)
  return metrics.EvalMetrics.single_from_model_output(
    logits=logits,
    labels=batch["label"],
    loss=losses.cross_entropy(logits, batch["label"]),
    mask=batch["mask"],
    probabilities=jax.nn.softmax(logits),
  )


def predict_step(
  variables: dict,
  images: jax.Array,
  *,
  model: Any,
  config: ml_collections.ConfigDict,
  hflip: bool = False,
) -> jax.Array:
  """Class probabilities of uint8 images at their source size.

  With `hflip` (test-time augmentation), the mean of the softmax of each image and of its mirror
  image, from one forward pass over both; flipping before the resize equals flipping after it.
  """
  if not hflip:
    return jax.nn.softmax(eval_logits(variables, images, model=model, config=config))
  both = jnp.concatenate([images, images[:, :, ::-1]])
  plain, flipped = jnp.split(
    jax.nn.softmax(eval_logits(variables, both, model=model, config=config)), 2
  )
  return (plain + flipped) / 2
