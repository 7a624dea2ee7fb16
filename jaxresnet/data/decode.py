"""Image files -> RGB uint8 pixels, exactly as PIL decodes them (as torchvision reads them)."""

import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxresnet import errors

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # Those of tfds.folder_dataset.ImageFolder.


def read_image(path: str | pathlib.Path, size: int) -> np.ndarray:
  """uint8 [size, size, 3]: the file decoded by PIL, gray or RGBA made RGB by `convert("RGB")`.

  Images of another size are resized by PIL itself (bilinear), so that they can be batched with
  the others; those pixels are PIL's too.

  Raises:
    ValueError: naming the file, for a missing, unreadable or truncated image.
  """
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
      if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
      return np.asarray(image)
  except (OSError, UnidentifiedImageError, ValueError) as error:
    raise errors.UserError(
      f"Cannot read the image {path}: {error}. Replace or delete this file."
    ) from error
