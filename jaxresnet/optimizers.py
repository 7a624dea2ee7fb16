"""The paper's optimizers in Optax, with torch.optim's exact update rules, and param groups.

torch's SGD and Adam add `weight_decay * param` to the gradient before momentum (L2
regularisation, not AdamW's decoupled decay); `optax.add_decayed_weights` placed first in the
chain does the same, for every parameter (BatchNorm and biases included, as torch's default
parameter group does), or for the kernels only with `config.weight_decay_bn_bias=False`.

What torch users write as param groups is `optax.partition` here: the head ("fc") gets
`learning_rate`, the body `learning_rate * backbone_lr_multiplier`, and frozen parameters
(`config.freeze`, `config.batchnorm="frozen"`) get `optax.set_to_zero`, which keeps no
optimizer state for them, as torch keeps none for parameters without gradients.
"""

import functools
from typing import Any

import jax
import ml_collections
import optax

from jaxresnet import errors, models

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "warmup_cosine")
# The config fields that shape the optimizer state's tree (a checkpoint must match them), with
# the values a run had before they existed.
LAYOUT_DEFAULTS = {"freeze": "none", "batchnorm": "train", "backbone_lr_multiplier": 1.0,
                   "weight_decay_bn_bias": True}  # fmt: skip


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


def param_labels(params: Any, freeze: str = "none", batchnorm: str = "train") -> Any:
  """Each parameter's group: "head" (fc), "body", or "frozen" (fixed by freeze or batchnorm)."""
  frozen = models.frozen_stages(freeze)

  def label(path: tuple, _) -> str:
    names = [k.key for k in path]
    stage = models.stage_of(names)
    if stage in frozen or (batchnorm == "frozen" and _is_batchnorm(names)):
      return "frozen"
    return "head" if stage == "head" else "body"

  return jax.tree_util.tree_map_with_path(label, params)


def _is_batchnorm(names: list[str]) -> bool:
  """BatchNorm's parameters are `scale` and `bias`; the only other bias is the head's."""
  return names[-1] == "scale" or (names[-1] == "bias" and names[0] != "fc")


def decayed(params: Any) -> Any:
  """True for the convolution and head kernels: what gets weight decay without BN and biases."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def create_optimizer(
  config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
  """SGD (+momentum, +nesterov) or Adam, with torch's L2 weight decay, from the config.

  With the default fine-tuning controls this is one group, the same state tree as before
  param groups existed; otherwise `optax.partition` over `param_labels`.
  """
  learning_rate = create_learning_rate(config, steps_per_epoch)
  if config.weight_decay < 0:
    raise errors.UserError(f"config.weight_decay must be >= 0, got {config.weight_decay}.")
  head = _update_rule(config, learning_rate)
  if all(config[k] == v for k, v in LAYOUT_DEFAULTS.items()):
    return head
  multiplier = config.backbone_lr_multiplier
  transforms = {
    "head": head,
    "body": _update_rule(config, lambda step: multiplier * learning_rate(step)),
    "frozen": optax.set_to_zero(),
  }
  labels = functools.partial(param_labels, freeze=config.freeze, batchnorm=config.batchnorm)
  return optax.partition(transforms, labels)


def _update_rule(
  config: ml_collections.ConfigDict, learning_rate: optax.ScalarOrSchedule
) -> optax.GradientTransformation:
  """One param group's rule: torch's L2 decay (on every parameter or the kernels), then SGD/Adam."""
  if config.optimizer == "sgd":
    optimizer = optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov)
  elif config.optimizer == "adam":
    optimizer = optax.adam(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)
  else:
    raise errors.UserError(
      f"Unknown config.optimizer={config.optimizer!r}: choose one of {OPTIMIZERS}."
    )
  mask = None if config.weight_decay_bn_bias else decayed
  return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=mask), optimizer)
