"""Image files -> RGB uint8 pixels, as PIL decodes them (as torchvision reads them).

8-bit images are PIL's pixels exactly: gray, palette or RGBA made RGB by `convert("RGB")`.
16-bit grayscale (PNG, TIFF: PIL modes I;16, I;16B, I) is scaled to 8 bits as `value >> 8`, what
torchvision's `decode_image` followed by `to_dtype(torch.uint8, scale=True)` gives, and what PIL
itself does to 16-bit RGB PNGs; PIL's `convert("RGB")` would clip every value above 255 to white.
"""

import pathlib
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxresnet import errors

# tfds.folder_dataset.ImageFolder's (.jpg, .jpeg, .png), and the others PIL reads here.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# PIL's modes of 16-bit grayscale; "I" (32-bit) is how older PIL opens them, clipped to 16 bits.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def is_image_file_name(path: pathlib.Path) -> bool:
  """An image suffix, and not hidden: macOS's `._name.jpg` resource forks are not images."""
  return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def find_images(paths: Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
  """The files named, in order, each folder replaced by its image files (recursively, sorted).

  Raises:
    UserError: for a path that does not exist or a folder without images, before any decoding.
  """
  found = []
  for path in map(pathlib.Path, paths):
    if path.is_dir():
      images = sorted(p for p in path.rglob("*") if is_image_file_name(p) and p.is_file())
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


def sampled_sizes(paths: Sequence[str | pathlib.Path], samples: int) -> list[tuple[int, int]]:
  """(width, height) of `samples` files spread over `paths`, from their headers alone; files PIL
  cannot open are left out (they are named, with the fix, when decoded)."""
  sizes = []
  for path in paths[:: max(1, len(paths) // samples)][:samples]:
    try:
      with Image.open(path) as image:
        sizes.append(image.size)
    except (OSError, ValueError):
      continue
  return sizes


def read_rgb(file: str | pathlib.Path | BinaryIO, name: str = "") -> Image.Image:
  """The image file (a path, or an open binary file called `name`) decoded by PIL and made RGB
  (see the module docstring), fully loaded.

  Raises:
    UserError: naming the file, for a missing, unreadable or truncated image.
  """
  try:
    with Image.open(file) as image:
      rgb = _to_rgb(image)
      rgb.load()
      return rgb
  except (OSError, UnidentifiedImageError, ValueError) as error:
    raise errors.UserError(
      f"Cannot read the image {name or file}: {error}. Replace or delete this file."
    ) from error


def _to_rgb(image: Image.Image) -> Image.Image:
  if image.mode in _SIXTEEN_BIT_MODES:
    pixels = np.clip(np.asarray(image, np.int64), 0, 65535) >> 8
    image = Image.fromarray(pixels.astype(np.uint8), "L")
  return image.convert("RGB")
