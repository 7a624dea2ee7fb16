"""The model zoo's bookkeeping: parameter counts equal torchvision's, names, dtypes, the init.

Golden counts: torchvision's published `num_params` of the ImageNet weights
(`ResNet18_Weights.IMAGENET1K_V1.meta["num_params"]`, likewise for 34 and 50), which are also
checked against torchvision's own modules built here.
"""

import jax
import numpy as np
import pytest
import torchvision

from jaxresnet import models

GOLDEN_NUM_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("arch", sorted(GOLDEN_NUM_PARAMS))
def test_parameter_counts_equal_torchvision(arch):
  model = models.create_model(arch, 1000)
  shapes = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0)))
  torch_model = torchvision.models.get_model(arch, weights=None)
  torch_params = sum(p.numel() for p in torch_model.parameters())
  meta = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.meta["num_params"]
  assert _count(shapes["params"]) == GOLDEN_NUM_PARAMS[arch] == torch_params == meta
  # BatchNorm statistics: torch's running_mean and running_var buffers.
  stats = sum(b.numel() for n, b in torch_model.named_buffers() if n.endswith(("_mean", "_var")))
  assert _count(shapes["batch_stats"]) == stats


def test_head_follows_the_class_count():
  shapes = jax.eval_shape(
    lambda: models.init_variables(models.create_model("resnet18", 10), jax.random.key(0))
  )
  assert shapes["params"]["fc"]["kernel"].shape == (512, 10)
  assert _count(shapes["params"]) == GOLDEN_NUM_PARAMS["resnet18"] - 990 * 513


def test_init_is_seeded_and_parameters_stay_float32():
  bf16 = models.create_model("resnet18", 10, "bfloat16")
  assert bf16.dtype == jax.numpy.bfloat16
  shapes = jax.eval_shape(lambda: models.init_variables(bf16, jax.random.key(0)))
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {np.dtype(np.float32)}
  model = models.create_model("resnet18", 10)
  a, b, c = (models.init_variables(model, jax.random.key(seed)) for seed in (0, 0, 1))
  pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  assert all(np.array_equal(x, y) for x, y in pairs)
  assert not np.array_equal(a["params"]["conv1"]["kernel"], c["params"]["conv1"]["kernel"])


def test_unknown_architecture_names_the_choices():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet19': choose one of \['resnet18'"):
    models.create_model("resnet19", 10)
