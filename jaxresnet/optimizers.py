"""The paper's optimizers in Optax, with torch.optim's exact update rules.

torch's SGD and Adam add `weight_decay * param` to the gradient before momentum (L2
regularisation, not AdamW's decoupled decay); `optax.add_decayed_weights` placed first in the
chain does the same, for every parameter (BatchNorm and biases included, as torch's default
parameter group does).
"""

import ml_collections
import optax

from jaxresnet import errors

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "warmup_cosine")


def create_learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate per step: constant (the paper) or linear warmup then cosine decay."""
  if config.lr_schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  if config.lr_schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=config.learning_rate,
      warmup_steps=int(config.warmup_epochs * steps_per_epoch),
      decay_steps=config.num_epochs * steps_per_epoch,
    )
  raise errors.UserError(
    f"Unknown config.lr_schedule={config.lr_schedule!r}: choose one of {SCHEDULES}."
  )


def create_optimizer(
  config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
  """SGD (+momentum, +nesterov) or Adam, with torch's L2 weight decay, from the config."""
  learning_rate = create_learning_rate(config, steps_per_epoch)
  if config.optimizer == "sgd":
    optimizer = optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov)
  elif config.optimizer == "adam":
    optimizer = optax.adam(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)
  else:
    raise errors.UserError(
      f"Unknown config.optimizer={config.optimizer!r}: choose one of {OPTIMIZERS}."
    )
  if config.weight_decay < 0:
    raise errors.UserError(f"config.weight_decay must be >= 0, got {config.weight_decay}.")
  return optax.chain(optax.add_decayed_weights(config.weight_decay), optimizer)
