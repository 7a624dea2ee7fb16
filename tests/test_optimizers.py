"""The paper's optimizers, built by `optimizers.create_optimizer`, against torch.optim.

First the update rules alone: the same gradients, 5 steps, in float32 as in training. SGD
differs from torch by a rounding of `lr * buffer` per step (<= 1e-7 relative per tensor). Adam's
difference is optax's bias correction, `1 - b2**t` in float32, ~1.3e-5 relative off torch's
(Python float64) for the first ~1000 steps, so each step is ~6e-6 (relative) short of torch's
(<= 1e-5; in float64 the two agree to 1e-16). Then 3 whole training steps (`steps.update`:
train-mode forward, loss, backward, update, BatchNorm statistics) in float64, where the two
frameworks compute the same numbers: <= 1e-10 relative per tensor.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from configs import default
from convert import layout, torch_to_flax
from jaxresnet import models, optimizers, steps
from tests import torch_utils

ARCH, NUM_CLASSES = "resnet18", 10
# The paper's two optimizers, then two variants the config allows (torch's L2 decay in Adam,
# Nesterov SGD).
PAPER = {
  "sgd": {"optimizer": "sgd", "learning_rate": 0.001, "momentum": 0.9, "weight_decay": 1e-4},
  "adam": {"optimizer": "adam", "learning_rate": 0.01, "b1": 0.9, "b2": 0.999, "eps": 1e-8},
  "adam_l2": {"optimizer": "adam", "learning_rate": 0.01, "weight_decay": 1e-4},
  "sgd_nesterov": {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
}
TOLERANCE = {"sgd": 1e-7, "adam": 1e-5}


pytestmark = pytest.mark.usefixtures("exact_matmuls")


def paper_config(name: str) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.update(PAPER[name])
  return config


def torch_optimizer(config: ml_collections.ConfigDict, model: torch.nn.Module):
  """torch.optim's counterpart of `optimizers.create_optimizer(config)`."""
  if config.optimizer == "sgd":
    return torch.optim.SGD(
      model.parameters(),
      lr=config.learning_rate,
      momentum=config.momentum,
      nesterov=config.nesterov,
      weight_decay=config.weight_decay,
    )
  return torch.optim.Adam(
    model.parameters(),
    lr=config.learning_rate,
    betas=(config.b1, config.b2),
    eps=config.eps,
    weight_decay=config.weight_decay,
  )


def report(title: str, errors: dict[str, float], tolerance: float) -> None:
  worst = max(errors, key=errors.get)
  print(f"\n{title}: largest relative difference {errors[worst]:.2e} ({worst})")
  assert errors[worst] <= tolerance, worst


# Fast: SGD (the paper's best); Adam and the variants slow (Adam in float64 is also in
# test_finetuning.py's param-group parity).
@pytest.mark.parametrize(
  "name", [n if n == "sgd" else pytest.param(n, marks=pytest.mark.slow) for n in PAPER]
)
def test_same_gradients_give_torchs_parameters(name):
  config = paper_config(name)
  torch_model = torch_utils.randomized_torchvision(ARCH, NUM_CLASSES)
  variables = torch_to_flax.convert_state_dict(
    {k: v.clone() for k, v in torch_model.state_dict().items()},
    ARCH,  # torch updates in place.
  )
  model = models.create_model(ARCH, NUM_CLASSES)
  state = steps.create_train_state(model, variables, optimizers.create_optimizer(config, 1))
  apply_gradients = jax.jit(lambda state, grads: state.apply_gradients(grads=grads))
  optimizer = torch_optimizer(config, torch_model)
  generator = torch.Generator().manual_seed(0)
  for _ in range(5):
    for p in torch_model.parameters():
      p.grad = 0.01 * torch.randn(p.shape, generator=generator)
    grads = {
      path: layout.to_flax(path, torch_model.get_parameter(layout.torch_key(path)).grad.numpy())
      for path, _ in layout.flatten({"params": state.params})
    }
    state = apply_gradients(state, layout.unflatten(grads)["params"])
    optimizer.step()
  errors = torch_utils.relative_errors({"params": state.params}, torch_model.state_dict())
  report(f"{name}, 5 steps on the same gradients", errors, TOLERANCE[config.optimizer])


# Slow: the fast tier proves its parts (gradients, updates, BatchNorm statistics) one by one.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_three_training_steps_float64_equal_torch(name, tmp_path):
  """At 32x32 (4 CIFAR-10 images, 4 of noise) to stay quick; the forward is size-agnostic."""
  config = paper_config(name)
  images, labels, torch_model = torch_utils.float64_training_inputs(ARCH, NUM_CLASSES)
  with jax.enable_x64(True):
    variables = torch_utils.convert_with_cli(torch_model, tmp_path, ARCH)
    model = models.create_model(ARCH, NUM_CLASSES, jnp.float64)
    state = steps.create_train_state(model, variables, optimizers.create_optimizer(config, 1))
    update = jax.jit(steps.update)
    for step_labels in labels:
      state, _ = update(state, torch_utils.to_nhwc(images), step_labels.numpy())
    result = jax.tree.map(np.asarray, {"params": state.params, "batch_stats": state.batch_stats})

  optimizer = torch_optimizer(config, torch_model)
  loss_fn = torch.nn.CrossEntropyLoss()
  torch_model.train()
  for step_labels in labels:
    optimizer.zero_grad()
    loss_fn(torch_model(images), step_labels).backward()
    optimizer.step()
  errors = torch_utils.relative_errors(result, torch_model.state_dict())
  report(f"{name}, 3 training steps in float64", errors, 1e-10)
