"""The fine-tuning controls: `freeze`, `batchnorm`, `backbone_lr_multiplier`, and weight decay
without BatchNorm and biases (README, "Fine-tuning").

- Frozen parts get no backward pass: the compiled step holds no input- or weight-gradient
  convolution for them (counted in its StableHLO), not just zeroed updates.
- Frozen parameters and BatchNorm statistics are bit-identical after training steps; the rest
  moves.
- The param groups equal torch.optim's param groups in float64 (<= 1e-10 relative per tensor),
  for SGD and Adam, with torch's frozen modules (`requires_grad_(False)` plus `.eval()`).
- A linear probe's optimizer state holds the head only, measured on resnet152.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from configs import default
from jaxresnet import models, optimizers, steps
from tests import torch_utils

ARCH, NUM_CLASSES = "resnet18", 10


def finetune_config(**overrides) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.update({"weight_decay": 1e-4, **overrides})
  return config


def train_state(config: ml_collections.ConfigDict, arch: str = ARCH, dtype=jnp.float32):
  model = models.create_model(arch, NUM_CLASSES, dtype, config.freeze, config.batchnorm)
  variables = models.init_variables(model, jax.random.key(0))
  return steps.create_train_state(model, variables, optimizers.create_optimizer(config, 1))


@pytest.mark.parametrize(
  "freeze, convolutions, matmuls",
  [
    # ResNet-18 has 20 convolutions, 3 of them 1x1 (the downsamples: matmuls, conv.py), and the
    # head. Training all: 20 forward, 19 input-gradient (not the image's) and 20 weight-gradient
    # convolutions, 9 of them the downsamples' matmuls, and the head's 3 matmuls.
    ("none", 50, 12),
    # Through layer2: 8 input gradients (not those reading layer2's output, layer3.0.conv1 and
    # layer3.0.downsample.0; layer4.0's downsample a matmul) and the weight gradients of the 10
    # of layer3 and layer4 (2 downsamples).
    ("layer2", 32, 9),
    # A linear probe: the forward pass only, and the head's forward and weight gradient.
    ("head_only", 17, 5),
  ],
)
def test_frozen_parts_get_no_backward_pass(freeze, convolutions, matmuls):
  config = finetune_config(freeze=freeze)
  state = jax.eval_shape(lambda: train_state(config))
  # At 224 every 3x3 is a convolution (no matmul over windows: layer4 is 7x7). Lowered only:
  # nothing runs.
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((2,), jnp.int32)
  hlo = jax.jit(steps.update).lower(state, images, labels).as_text()
  assert hlo.count("stablehlo.convolution") == convolutions
  assert hlo.count("stablehlo.dot_general") == matmuls


def changed(before, after) -> dict[str, bool]:
  """Per flattened path, whether any value differs."""
  flat_before = dict(jax.tree_util.tree_flatten_with_path(before)[0])
  flat_after = dict(jax.tree_util.tree_flatten_with_path(after)[0])
  return {jax.tree_util.keystr(k): bool(np.any(np.asarray(flat_before[k]) != np.asarray(v)))
          for k, v in flat_after.items()}  # fmt: skip


def is_batchnorm(path: str) -> bool:
  return "'bn" in path or "'downsample']['1'" in path


def in_stem_to_layer2(path: str) -> bool:
  return path.startswith(("['conv1'", "['bn1'", "['layer1'", "['layer2'"))


@pytest.mark.parametrize(
  "overrides, frozen",
  [
    # Both controls at once (one compilation), and the linear probe; each control alone is also
    # in test_param_groups_float64_equal_torch (freeze=layer1; batchnorm=frozen).
    ({"freeze": "layer2", "batchnorm": "frozen"},
     lambda path: in_stem_to_layer2(path) or is_batchnorm(path)),
    ({"freeze": "head_only"}, lambda path: not path.startswith("['fc'")),
  ],
  ids=["freeze=layer2+batchnorm=frozen", "freeze=head_only"],
)  # fmt: skip
@pytest.mark.slow  # The fast tier proves freezing by the HLO count above.
def test_frozen_parameters_and_statistics_stay_bit_identical(overrides, frozen):
  """3 SGD steps with momentum and weight decay on noise at 32x32, with class weights."""
  state = train_state(finetune_config(**overrides, learning_rate=0.1))
  before = {"params": state.params, "batch_stats": state.batch_stats}
  images = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
  weights = np.linspace(0.5, 2.0, NUM_CLASSES, dtype=np.float32)  # A constant in the step.
  update = jax.jit(functools.partial(steps.update, class_weights=weights))
  for step in range(3):
    state, _ = update(state, images, jnp.arange(8) % NUM_CLASSES + step % 2)
  moved = changed(before, {"params": state.params, "batch_stats": state.batch_stats})
  wrong = {path for path, did in moved.items() if did == frozen(path.split("]", 1)[1])}
  assert not wrong, sorted(wrong)[:5]
  assert sum(not did for did in moved.values()) > 0  # Something was frozen.


def torch_param_groups(model: torch.nn.Module, config: ml_collections.ConfigDict) -> list[dict]:
  """What a torch user writes for these controls: frozen modules, and param groups."""
  frozen = [{"stem": "conv1"}.get(s, s) for s in models.frozen_stages(config.freeze)]
  frozen += ["bn1"] if "conv1" in frozen else []
  if config.batchnorm == "frozen":
    frozen += [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for name in frozen:
    model.get_submodule(name).requires_grad_(False).eval()
  groups = {}
  for name, param in model.named_parameters():
    if not param.requires_grad:
      continue
    lr = config.learning_rate * (1.0 if name.startswith("fc.") else config.backbone_lr_multiplier)
    decay = config.weight_decay if config.weight_decay_bn_bias or param.ndim > 1 else 0.0
    groups.setdefault((lr, decay), []).append(param)
  return [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]


@pytest.mark.slow
@pytest.mark.parametrize(
  "overrides",
  [
    {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "freeze": "layer1",
     "backbone_lr_multiplier": 0.1, "weight_decay_bn_bias": False},
    {"optimizer": "adam", "learning_rate": 0.01, "batchnorm": "frozen",
     "backbone_lr_multiplier": 0.3, "weight_decay_bn_bias": False},
  ],
  ids=["sgd-freeze=layer1", "adam-batchnorm=frozen"],
)  # fmt: skip
def test_param_groups_float64_equal_torch(overrides, tmp_path):
  """3 training steps at 32x32 on 4 CIFAR-10 images and 4 of noise, as test_optimizers does."""
  config = finetune_config(**overrides)
  images, labels, torch_model = torch_utils.float64_training_inputs(ARCH, NUM_CLASSES)
  with jax.enable_x64(True):
    variables = torch_utils.convert_with_cli(torch_model, tmp_path, ARCH)
    model = models.create_model(ARCH, NUM_CLASSES, jnp.float64, config.freeze, config.batchnorm)
    tx = optimizers.create_optimizer(config, 1)
    state = steps.create_train_state(model, variables, tx)
    update = jax.jit(steps.update)
    for step_labels in labels:
      state, _ = update(state, torch_utils.to_nhwc(images), step_labels.numpy())
    result = jax.tree.map(np.asarray, {"params": state.params, "batch_stats": state.batch_stats})

  torch_model.train()
  groups = torch_param_groups(torch_model, config)
  if config.optimizer == "sgd":
    optimizer = torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum)
  else:
    optimizer = torch.optim.Adam(groups, lr=config.learning_rate, eps=config.eps)
  for step_labels in labels:
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(torch_model(images), step_labels).backward()
    optimizer.step()
  errors = torch_utils.relative_errors(result, torch_model.state_dict())
  worst = max(errors, key=errors.get)
  print(f"\n{config.optimizer}: largest relative difference {errors[worst]:.2e} ({worst})")
  assert errors[worst] <= 1e-10, worst


def test_linear_probe_optimizer_state_holds_only_the_head():
  """resnet152, 10 classes, Adam (two moments per trained parameter), measured by shape only."""
  sizes = {}
  for freeze in ("none", "head_only"):
    config = finetune_config(optimizer="adam", freeze=freeze)
    state = jax.eval_shape(lambda config=config: train_state(config, "resnet152"))
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim]  # Not the step counts.
    sizes[freeze] = sum(x.size for x in moments)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  head = 2048 * NUM_CLASSES + NUM_CLASSES
  print(f"\nresnet152 Adam moments: {sizes['none']:,} values ({4 * sizes['none'] / 2**20:.0f} MiB) "
        f"fine-tuning all {num_params:,} parameters, {sizes['head_only']:,} "
        f"({4 * sizes['head_only'] / 2**10:.0f} KiB) as a linear probe")  # fmt: skip
  assert sizes["none"] == 2 * num_params  # Adam's two moments of every parameter.
  assert sizes["head_only"] == 2 * head  # The head's only: set_to_zero keeps nothing.
