"""The host's half of the transforms: torchvision's resizes and crops, on PIL images.

`config.transforms` names a preset (README, "Your own images"):

- "paper" (the default): `Resize(image_size)` (shorter side, aspect kept) +
  `CenterCrop(image_size)`, then the paper's random horizontal and vertical flips in training.
- "imagenet", torchvision's fine-tuning standard: in training `RandomResizedCrop(image_size,
  scale=config.crop_scale, ratio=config.crop_ratio)` + a random horizontal flip; in evaluation
  `Resize(eval_resize)` + `CenterCrop(image_size)`, where eval_resize is round(image_size / 0.875)
  unless `config.eval_resize` or the starting weights say otherwise (`eval_resize`).

The host does what depends on each image's size, with PIL's own calls in torchvision's order, so
the pixels are torchvision's exactly; the device then resizes what the host sent to image_size if
it differs, flips and normalizes (`jaxresnet/preprocess.py`). Images of one square size (TFDS
CIFAR-10's 32x32) go to the device as they are: there `Resize(image_size)` + `CenterCrop` is the
device's PIL-exact square resize, and a 32x32 image ships 49x fewer bytes than its 224x224 resize.

Random crops are drawn from (seed, global step, position in the global batch), so they do not
depend on the process count and a resumed run draws what an uninterrupted one would.
"""

import dataclasses
import math

import ml_collections
import numpy as np
from PIL import Image

from jaxresnet import errors

PRESETS = ("paper", "imagenet")
# torchvision's reference recipe evaluates at a centre crop of 87.5% (224 of 256).
_CROP_FRACTION = 0.875
# Per preset: whether training flips (horizontal, vertical) when config.vflip is unset.
_FLIPS = {"paper": (True, True), "imagenet": (True, False)}


def flips(config: ml_collections.ConfigDict) -> tuple[bool, bool]:
  """(horizontal, vertical) random flips in training: config.hflip, and config.vflip if set,
  else the preset's (the paper flips vertically too; torchvision's standard does not)."""
  vflip = _FLIPS[config.transforms][1] if config.vflip is None else config.vflip
  return config.hflip, vflip


def eval_resize(config: ml_collections.ConfigDict, weights: dict | None = None) -> int:
  """The shorter side that evaluation resizes to before its centre crop.

  Args:
    config: "paper" resizes to image_size; "imagenet" to config.eval_resize if set, else to the
      starting weights' own (torchvision's V2 weights: 232 for a 224 crop), scaled to image_size,
      else to round(image_size / 0.875).
    weights: the converted weights' metadata, whose `eval_transform` holds torchvision's
      `resize_size` and `crop_size` for weights from torchvision.
  """
  if config.transforms == "paper":
    if config.eval_resize:
      raise errors.UserError(
        f"config.eval_resize = {config.eval_resize} applies to transforms='imagenet' only; the "
        "paper's evaluation resizes to image_size. Set it to 0, or --config.transforms=imagenet."
      )
    return config.image_size
  if config.eval_resize:
    return config.eval_resize
  own = (weights or {}).get("eval_transform")
  if own:
    return round(config.image_size * own["resize_size"] / own["crop_size"])
  return round(config.image_size / _CROP_FRACTION)


def from_config(config: ml_collections.ConfigDict, resize: int | None = None) -> "HostTransform":
  """The run's host transform; `resize` (evaluation's shorter side) defaults to `eval_resize`."""
  return HostTransform(
    preset=config.transforms, image_size=config.image_size, resize=resize or eval_resize(config),
    source_size=config.source_image_size, scale=tuple(config.crop_scale),
    ratio=tuple(config.crop_ratio), seed=config.seed,
  )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class HostTransform:
  """Turns decoded images of any size into the fixed-size uint8 images a batch stacks.

  `source_size` > 0 first squashes every image to source_size x source_size (bilinear), as
  `config.source_image_size` asks; 0 keeps each image's own size.
  """

  preset: str
  image_size: int
  resize: int  # Evaluation's shorter side, before the centre crop (`eval_resize`).
  source_size: int = 0
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  seed: int = 0

  def __post_init__(self):
    if self.preset not in PRESETS:
      raise errors.UserError(
        f"config.transforms = {self.preset!r} is unknown: use one of {', '.join(PRESETS)}."
      )
    lo, hi = self.scale
    if not 0 < lo <= hi <= 1:
      raise errors.UserError(
        f"config.crop_scale = {self.scale} must be (lo, hi) with 0 < lo <= hi <= 1: the share of "
        "the image's area a random crop covers, e.g. (0.08, 1.0)."
      )
    if self.resize < self.image_size:
      raise errors.UserError(
        f"config.eval_resize = {self.resize} is below config.image_size = {self.image_size}: "
        "evaluation's centre crop needs a shorter side of at least image_size; raise it, or set 0 "
        "for the default."
      )
    if self.source_size < 0:
      raise errors.UserError(
        f"config.source_image_size = {self.source_size} must be >= 0 (0: each image's own size)."
      )
    if not 0 < self.ratio[0] <= self.ratio[1]:
      raise errors.UserError(
        f"config.crop_ratio = {self.ratio} must be (lo, hi) with 0 < lo <= hi: the crop's aspect "
        "ratio range, e.g. (0.75, 1.3333)."
      )

  @property
  def output_size(self) -> int:
    """The side of the squares `__call__` returns."""
    return self.source_size if self.preset == "paper" and self.source_size else self.image_size

  def ships_as_is(self, shape: tuple[int, ...], train: bool) -> bool:
    """Whether images of `shape` (all alike, in memory) need no host work: squares the device's
    resize handles exactly (see the module docstring)."""
    height, width = shape[:2]
    square = height == width and self.source_size in (0, height)
    return square and (self.preset == "paper" or (not train and self.resize == self.image_size))

  def __call__(self, image: Image.Image, draw: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [S, S, 3], S = `output_size`.

    Args:
      image: an RGB image.
      draw: None in evaluation; in training (global step, position in the global batch), from
        which (with the seed) the random crop is drawn.
    """
    if self.source_size and image.size != (self.source_size, self.source_size):
      image = image.resize((self.source_size, self.source_size), Image.Resampling.BILINEAR)
    if self.preset == "imagenet" and draw is not None:
      rng = np.random.default_rng([self.seed, *draw])
      box = random_resized_crop_box(image.size, self.scale, self.ratio, rng)
      return np.asarray(resized_crop(image, box, self.image_size))
    if self.preset == "paper" and self.source_size:
      return np.asarray(image)  # A square: resized on the device.
    return np.asarray(center_crop(resize_shorter_side(image, self.resize), self.image_size))


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
  """torchvision's `Resize(size)` on a PIL image: the shorter side to `size`, aspect kept (the
  longer side truncated, as torchvision computes it), PIL bilinear; unchanged if already so."""
  width, height = image.size
  short, long = sorted((width, height))
  new_long = int(size * long / short)
  new = (size, new_long) if width <= height else (new_long, size)
  return image if new == image.size else image.resize(new, Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
  """torchvision's `CenterCrop(size)` on an image at least `size` on each side."""
  width, height = image.size
  top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def random_resized_crop_box(
  size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float],
  rng: np.random.Generator,
) -> tuple[int, int, int, int]:  # fmt: skip
  """(top, left, height, width): `RandomResizedCrop.get_params`'s distribution, drawn from `rng`.

  The same rule as torchvision's: up to 10 tries of an area share uniform in `scale` and a log-
  uniform aspect ratio in `ratio`, rounded to whole pixels, kept if it fits, at a uniform
  position; otherwise the largest centred crop within `ratio`. Written out because torchvision's
  draws from torch's global generator, which training (no torch) neither has nor could seed per
  example.
  """
  width, height = size
  area = height * width
  log_ratio = np.log(ratio)
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, round(width / min(ratio))
  elif in_ratio > max(ratio):
    w, h = round(height * max(ratio)), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Image.Image, box: tuple[int, int, int, int], size: int) -> Image.Image:
  """torchvision's `resized_crop` on a PIL image: crop `box` (top, left, height, width), then
  resize to size x size, PIL bilinear."""
  top, left, height, width = box
  return image.crop((left, top, left + width, top + height)).resize(
    (size, size), Image.Resampling.BILINEAR
  )
