"""The model zoo's bookkeeping: variables equal torchvision's, names, dtypes, the init.

Golden counts: torchvision's published `num_params` of each architecture's default ImageNet
weights (`torchvision.models.get_model_weights(arch).DEFAULT.meta["num_params"]`, torchvision
0.29.1), which are also checked against torchvision's own modules built here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from convert import layout
from jaxresnet import models

GOLDEN_NUM_PARAMS = {
  "resnet18": 11_689_512,
  "resnet34": 21_797_672,
  "resnet50": 25_557_032,
  "resnet101": 44_549_160,
  "resnet152": 60_192_808,
  "resnext50_32x4d": 25_028_904,
  "resnext101_32x8d": 88_791_336,
  "resnext101_64x4d": 83_455_272,
  "wide_resnet50_2": 68_883_240,
  "wide_resnet101_2": 126_886_696,
}
FAST = ("resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2")


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_golden_table_covers_every_model():
  assert list(GOLDEN_NUM_PARAMS) == list(models.MODELS)


@pytest.mark.parametrize(
  "arch",  # One per block type in the fast tier; the deeper variants repeat them.
  [a if a in FAST else pytest.param(a, marks=pytest.mark.slow) for a in GOLDEN_NUM_PARAMS],
)
def test_variables_equal_torchvisions(arch):
  """Counts, and every torch key with its shape through `convert.layout` (the table both
  converters use), so each architecture converts strictly both ways. torchvision's model is
  built on the meta device: shapes without the cost of its init."""
  shapes = layout.variable_shapes(arch, 1000)
  with torch.device("meta"):
    torch_model = torchvision.models.get_model(arch, weights=None)
  torch_params = sum(p.numel() for p in torch_model.parameters())
  meta = torchvision.models.get_model_weights(arch).DEFAULT.meta["num_params"]
  num_params = sum(int(np.prod(s)) for p, s in shapes.items() if p[0] == "params")
  assert num_params == GOLDEN_NUM_PARAMS[arch] == torch_params == meta
  expected = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
  actual = {layout.torch_key(p): layout.torch_shape(p, s) for p, s in shapes.items()}
  assert actual == {k: s for k, s in expected.items() if not k.endswith(layout.COUNTER)}


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


def test_init_ignores_compute_dtype_and_fine_tuning_controls():
  """Every variant of a network draws its own `init`'s values, from one compilation."""
  tiny = functools.partial(models.ResNet, stage_sizes=(1,), block_cls=models.BasicBlock,
                           num_classes=3)  # fmt: skip
  variants = [tiny(), tiny(dtype=jnp.bfloat16, freeze="layer1", batchnorm="frozen")]
  with jax.enable_x64(True):
    variants.append(tiny(dtype=jnp.float64, freeze="head_only"))
    compiles = models._init_variables._cache_size()
    for model in variants:
      own = jax.jit(model.init, static_argnames="train")(
        jax.random.key(3), jnp.zeros((1, 32, 32, 3), jnp.float32), train=False
      )
      ours = models.init_variables(model, jax.random.key(3))
      pairs = zip(jax.tree.leaves(own), jax.tree.leaves(ours), strict=True)
      assert all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in pairs), model
  assert models._init_variables._cache_size() == compiles + 1


def test_unknown_architecture_names_the_choices():
  with pytest.raises(
    ValueError, match=r"Unknown model 'resnet19': choose one of \['resnet18', 'resnet34'"
  ):
    models.create_model("resnet19", 10)
