"""Gradient parity: d(mean cross-entropy)/d(every parameter) in train mode, against torch's .grad.

ResNet-18 at 112x112 (SIZE), on 4 CIFAR-10 images and 4 of noise with random labels, 10 classes
and randomised BatchNorm: a quarter of the paper's 224 in compute, in the form the paper's size
runs (conv.py): lax's convolution, forward and backward, at every layer (the 32x32 test covers
the matmul over windows of feature maps smaller than the kernel).
float64 proves the same derivative: <= 1e-10 relative per tensor, as the forward tests.

float32 has no tight bound, in either framework. A pre-activation within rounding of zero
(~1e-7 of its channel's scale; a 112x112 batch has hundreds of thousands) can land on the other
side of a ReLU, which changes that element's gradient by O(1); train-mode BatchNorm's backward
then spreads the error over the channel and every layer before it. Which element flips, and in
which framework, is luck: at 224, one flip in JAX's layer3.1.bn1 cost every earlier tensor ~3e-3.
Over 5 seeds of weights and labels at 224, the largest per-tensor error of torch's own float32
gradient was 0.9e-3 to 5.2e-3, of JAX's 3e-3 to 1.3e-2, and a per-tensor ratio to torch's error
(the issue's "<= 2x torch + 1e-7") failed on 4 of the 5, up to 6574x where torch had no flip. So
float32 is held to a fixed 2e-2: it catches a float32-only pathology (a low-precision reduction,
a lost term), while float64 is the proof of parity.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxresnet import losses, models
from tests import torch_utils

ARCH, NUM_CLASSES, SIZE = "resnet18", 10, 112


def torch_grads(
  model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
  model.train()
  model.zero_grad()
  torch.nn.functional.cross_entropy(model(images), labels).backward()
  # Copies: a later `model.double()` converts the gradients in place.
  return {name: p.grad.clone() for name, p in model.named_parameters()}


def flax_grads(
  variables: dict, images: np.ndarray, labels: np.ndarray, dtype, arch: str = ARCH
) -> dict:
  model = models.create_model(arch, NUM_CLASSES, dtype)

  def loss_fn(params):
    variables_in = {"params": params, "batch_stats": variables["batch_stats"]}
    logits, _ = model.apply(variables_in, images, train=True, mutable=["batch_stats"])
    return jnp.mean(losses.cross_entropy(logits, labels))

  return jax.tree.map(np.asarray, jax.jit(jax.grad(loss_fn))(variables["params"]))


@pytest.fixture(scope="module")
def grads(tmp_path_factory) -> dict:
  """Gradients of the same weights on the same batch: {"jax", "torch"} x {32, 64}."""
  images = torch_utils.parity_inputs(num_real=4, num_noise=4, size=SIZE)
  labels = torch.randint(0, NUM_CLASSES, (8,), generator=torch.Generator().manual_seed(2))
  torch_model = torch_utils.randomized_torchvision(ARCH, NUM_CLASSES)
  variables = torch_utils.convert_with_cli(torch_model, tmp_path_factory.mktemp("grads"), ARCH)
  with torch_utils.exact_matmuls():
    result = {
      "jax32": flax_grads(variables, torch_utils.to_nhwc(images), labels.numpy(), jnp.float32),
      "torch32": torch_grads(torch_model, images, labels),
    }
    with jax.enable_x64(True):
      variables = jax.tree.map(lambda x: np.asarray(x, np.float64), variables)  # Exact.
      images = images.double()
      result["jax64"] = flax_grads(
        variables, torch_utils.to_nhwc(images), labels.numpy(), jnp.float64
      )
    result["torch64"] = torch_grads(torch_model.double(), images, labels)
  return result


@pytest.mark.slow
def test_float64_gradients_equal_torch(grads):
  errors = torch_utils.relative_errors({"params": grads["jax64"]}, grads["torch64"])
  assert set(errors) == set(grads["torch64"])  # Every parameter, and no other.
  worst = max(errors, key=errors.get)
  print(f"\nfloat64 gradients: largest relative difference {errors[worst]:.2e} ({worst})")
  assert errors[worst] <= 1e-10, worst


@pytest.mark.slow
def test_float32_gradients_near_float64(grads):
  exact = grads["torch64"]
  jax_errors = torch_utils.relative_errors({"params": grads["jax32"]}, exact)
  torch_errors = {
    k: torch_utils.relative_error(g.numpy(), exact[k].numpy()) for k, g in grads["torch32"].items()
  }
  ratios = {k: jax_errors[k] / torch_errors[k] for k in exact}
  worst = max(jax_errors, key=jax_errors.get)
  print(
    f"\nfloat32 gradients vs torch float64: JAX up to {jax_errors[worst]:.2e} ({worst}), torch "
    f"up to {max(torch_errors.values()):.2e}; JAX/torch per tensor: median "
    f"{np.median(list(ratios.values())):.1f}, max {max(ratios.values()):.1f}"
  )
  assert jax_errors[worst] <= 2e-2, worst


# resnet18 in the fast tier: its one float64 proof of the whole model, forward in train mode and
# backward, on both conv paths; resnext50_32x4d slow.
@pytest.mark.parametrize("arch", [ARCH, pytest.param("resnext50_32x4d", marks=pytest.mark.slow)])
def test_float64_gradients_equal_torch_at_32x32(arch, tmp_path):
  """CIFAR's own size: layer3/4's convolutions run as models.Conv's matmul over windows (grouped
  in ResNeXt, whose backward is then a grouped convolution's in both frameworks)."""
  images = torch_utils.parity_inputs(num_real=4, num_noise=4, size=32).double()
  labels = torch.randint(0, NUM_CLASSES, (8,), generator=torch.Generator().manual_seed(3))
  torch_model = torch_utils.randomized_torchvision(arch, NUM_CLASSES).double()
  with jax.enable_x64(True):
    variables = torch_utils.convert_with_cli(torch_model, tmp_path, arch)
    actual = flax_grads(variables, torch_utils.to_nhwc(images), labels.numpy(), jnp.float64, arch)
  errors = torch_utils.relative_errors({"params": actual}, torch_grads(torch_model, images, labels))
  worst = max(errors, key=errors.get)
  print(f"\n{arch} float64 gradients at 32x32: largest relative difference {errors[worst]:.1e}")
  assert errors[worst] <= 1e-10, (worst, errors[worst])
