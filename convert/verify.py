"""Side-by-side check of a conversion: torchvision and jaxresnet on the same images.

For users with weights that cannot be fetched here (torchvision's ImageNet ones): one flag on
the converter prints how far the two models' logits are apart and how often their top-1 agrees.
"""

import pathlib

import jax.numpy as jnp
import numpy as np
import torch
import torchvision
from PIL import Image

from convert import transforms
from jaxresnet import errors, models, pretrained

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# The paper's evaluation transform, squared so that images of any shape stack into one batch.
TRANSFORM = transforms.paper_transform(224, square=True)


def sample_images(folder: pathlib.Path | None, count: int = 16) -> torch.Tensor:
  """NCHW float32: up to `count` images from `folder` (recursively), else N(0, 1) noise."""
  if folder is None:
    return torch.randn(count, 3, 224, 224, generator=torch.Generator().manual_seed(0))
  files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
  if not files:
    raise errors.UserError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}.")
  return torch.stack([TRANSFORM(Image.open(f).convert("RGB")) for f in files])


def compare(
  arch: str,
  state_dict: dict[str, torch.Tensor],
  variables: pretrained.Variables,
  images: torch.Tensor,
) -> tuple[float, float, float]:
  """(max |logit diff|, max |torch logit|, top-1 agreement) of the two models in eval mode."""
  num_classes = state_dict["fc.weight"].shape[0]
  torch_model = torchvision.models.get_model(arch, num_classes=num_classes)
  torch_model.load_state_dict(state_dict)
  with torch.no_grad():
    expected = torch_model.eval()(images).numpy()
  model = models.create_model(arch, num_classes)
  logits = np.asarray(model.apply(variables, jnp.asarray(images.permute(0, 2, 3, 1).numpy())))
  agreement = float(np.mean(logits.argmax(-1) == expected.argmax(-1)))
  return float(np.abs(logits - expected).max()), float(np.abs(expected).max()), agreement


def report(
  arch: str,
  state_dict: dict[str, torch.Tensor],
  variables: pretrained.Variables,
  folder: pathlib.Path | None,
) -> None:
  images = sample_images(folder)
  diff, scale, agreement = compare(arch, state_dict, variables, images)
  source = folder or "N(0, 1) noise"
  print(
    f"verify: {len(images)} images from {source}: max |logit diff| {diff:.3g} "
    f"(max |logit| {scale:.3g}), top-1 agreement {agreement:.1%}"
  )
