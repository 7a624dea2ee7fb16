"""torchvision models and real CIFAR-10 images shared by the parity tests.

Parity is always measured against torchvision's own modules, with weights that exercise every
term: BatchNorm statistics far from the identity and a fresh-looking head.
"""

import contextlib
import io
import pathlib
import tarfile
from collections.abc import Iterator, Mapping

import jax
import numpy as np
import torch
import torchvision
from PIL import Image

from convert import layout, torch_to_flax, transforms
from jaxresnet import pretrained
from jaxresnet.data import cifar10_jpeg


def randomized_torchvision(arch: str, num_classes: int = 1000, seed: int = 0) -> torch.nn.Module:
  """torchvision's model (its own init), with BatchNorm parameters and statistics randomised.

  gamma ~ U(0.5, 1.5), beta and running_mean ~ N(0, 0.1), running_var ~ U(0.5, 2), and
  non-zero `num_batches_tracked`, so no BN is an identity and every converted term matters.
  """
  torch.manual_seed(seed)
  model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
  with torch.no_grad():
    for i, module in enumerate(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
      module.weight.uniform_(0.5, 1.5)
      module.bias.normal_(0.0, 0.1)
      module.running_mean.normal_(0.0, 0.1)
      module.running_var.uniform_(0.5, 2.0)
      module.num_batches_tracked.fill_(1000 + i)
  return model.eval()


def real_images(count: int, split: str = "test") -> list[Image.Image]:
  """The first `count` CIFAR-10 JPEGs of `split`, cycling over the classes."""
  classes = cifar10_jpeg.CLASSES
  wanted = [cifar10_jpeg.member(split, classes[i % 10], i // 10) for i in range(count)]
  with tarfile.open(cifar10_jpeg.require_tarball()) as tar:
    members = {m.name: m for m in tar.getmembers() if m.name in set(wanted)}
    return [
      Image.open(io.BytesIO(tar.extractfile(members[n]).read())).convert("RGB") for n in wanted
    ]


def parity_inputs(num_real: int = 4, num_noise: int = 4, size: int = 224) -> torch.Tensor:
  """NCHW float32: real CIFAR-10 images through the paper's transform, then N(0, 1) noise."""
  transform = transforms.paper_transform(224)
  real = torch.stack([transform(im) for im in real_images(num_real)])
  if size != 224:
    real = torch.nn.functional.interpolate(real, size=(size, size), mode="bilinear")
  noise = torch.randn(num_noise, 3, size, size, generator=torch.Generator().manual_seed(1))
  return torch.cat([real, noise])


def float64_training_inputs(
  arch: str, num_classes: int, steps: int = 3
) -> tuple[torch.Tensor, list[torch.Tensor], torch.nn.Module]:
  """(images, labels per step, a randomized float64 torchvision model) for training-step parity:
  at 32x32, 4 CIFAR-10 images and 4 of noise, labels seeded."""
  images = parity_inputs(num_real=4, num_noise=4, size=32).double()
  generator = torch.Generator().manual_seed(0)
  labels = [torch.randint(0, num_classes, (8,), generator=generator) for _ in range(steps)]
  return images, labels, randomized_torchvision(arch, num_classes).double()


def to_nhwc(images: torch.Tensor) -> np.ndarray:
  return images.permute(0, 2, 3, 1).numpy()


def convert_with_cli(
  model: torch.nn.Module, tmp_path: pathlib.Path, arch: str, *extra: str
) -> pretrained.Variables:
  """Saves `model` with torch.save and converts it through the converter's CLI."""
  checkpoint = tmp_path / f"{arch}.pt"
  torch.save(model.state_dict(), checkpoint)
  output = tmp_path / f"{arch}-flax"
  torch_to_flax.main(
    ["--arch", arch, "--torch-checkpoint", str(checkpoint), "--output", str(output), *extra]
  )
  return pretrained.load_variables(output)


def stage_outputs(model: torch.nn.Module, images: torch.Tensor) -> dict[str, np.ndarray]:
  """torch's logits and the outputs of the stem (max pool) and layer1..4, as NHWC numpy."""
  outputs = {}
  hooks = [
    getattr(model, name).register_forward_hook(
      lambda _m, _i, out, key=key: outputs.__setitem__(
        key, out.detach().permute(0, 2, 3, 1).numpy()
      )
    )
    for name, key in [("maxpool", "stem")] + [(f"layer{i}", f"layer{i}") for i in range(1, 5)]
  ]
  with torch.no_grad():
    outputs["logits"] = model(images).numpy()
  for hook in hooks:
    hook.remove()
  return outputs


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
  """||actual - expected|| / ||expected||, computed in float64."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@contextlib.contextmanager
def exact_matmuls() -> Iterator[None]:
  """Full-precision matmuls in both frameworks: on a GPU, TF32 would swamp any parity bound."""
  saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
  torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
  try:
    with jax.default_matmul_precision("highest"):
      yield
  finally:
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def relative_errors(variables: dict, tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
  """Per torch key, `relative_error` of each Flax variable against torch's tensor.

  `tensors` is keyed like a state dict (a state dict, or parameter gradients); layouts are
  converted by `convert.layout`, the same table the converters use.
  """
  errors = {}
  for path, value in layout.flatten(variables):
    key = layout.torch_key(path)
    errors[key] = relative_error(value, layout.to_flax(path, tensors[key].detach().numpy()))
  return errors
