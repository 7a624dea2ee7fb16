"""Image files -> RGB uint8 pixels, exactly as PIL decodes them (as torchvision reads them)."""

import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxresnet import errors

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # Those of tfds.folder_dataset.ImageFolder.


def has_image_suffix(path: pathlib.Path) -> bool:
  return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(paths: Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
  """The files named, in order, each folder replaced by its image files (recursively, sorted).

  Raises:
    UserError: for a path that does not exist or a folder without images, before any decoding.
  """
  found = []
  for path in map(pathlib.Path, paths):
    if path.is_dir():
      images = sorted(p for p in path.rglob("*") if has_image_suffix(p) and p.is_file())
      if not images:
        raise errors.UserError(
          f"The folder {path} holds no {'/'.join(IMAGE_SUFFIXES)} images (searched recursively): "
          "pass folders or files of images."
        )
      found += images
    elif path.exists():
      found.append(path)
    else:
      raise errors.UserError(f"{path} does not exist: pass existing image files or folders.")
  return found


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
