"""The transforms presets (`jaxresnet/data/transforms.py`) against torchvision's own transforms.

- Deterministic transforms (the paper's Resize + CenterCrop, imagenet's evaluation resize + crop)
  give torchvision's pixels on PIL images, over real images of several sizes and aspect ratios.
- A random crop, given the box, gives `torchvision.transforms.functional.resized_crop`'s pixels.
- The box sampler's distribution is `RandomResizedCrop.get_params`': binned area share and log
  aspect ratio, within 5 sigma per bin.
- Through the data set: the imagenet preset's crops are drawn from (seed, step, position), the
  same for any process count and on restart; its evaluation resize comes from the config, the
  weights, or 0.875.
"""

import itertools

import jax
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from configs import default
from convert import torch_to_flax
from jaxresnet import errors
from jaxresnet.data import dataset, transforms

# Real CIFAR-10 photos blown up to sizes of either orientation, square, and near each crop.
SIZES = [(200, 150), (97, 203), (300, 300), (64, 48), (33, 250), (224, 225)]


@pytest.fixture(scope="module")
def photos(cifar_jpeg_subset) -> list[Image.Image]:
  files = sorted((cifar_jpeg_subset / "test").glob("*/0000.jpg"))[: len(SIZES)]  # Six classes.
  return [Image.open(f).convert("RGB").resize(size, Image.Resampling.BICUBIC)
          for f, size in zip(files, SIZES, strict=True)]  # fmt: skip


def _config(**overrides):
  config = default.get_config()
  config.update(overrides)
  return config


@pytest.mark.parametrize(
  "preset, size, torchvision_resize",
  [("paper", 32, 32), ("paper", 224, 224), ("imagenet", 64, 73), ("imagenet", 224, 256)],
)
def test_deterministic_transforms_are_torchvisions(photos, preset, size, torchvision_resize):
  """Resize(shorter side) + CenterCrop: exactly torchvision's pixels (the bound, 1 level, is
  the issue's; PIL's calls in torchvision's order give 0)."""
  transform = transforms.from_config(_config(transforms=preset, image_size=size))
  assert transform.resize == torchvision_resize  # round(size / 0.875) for imagenet.
  reference = T.Compose([T.Resize(torchvision_resize), T.CenterCrop(size)])
  worst = 0
  for photo in photos:
    ours = transform(photo).astype(int)
    theirs = np.asarray(reference(photo)).astype(int)
    assert ours.shape == theirs.shape == (size, size, 3)
    worst = max(worst, np.abs(ours - theirs).max())
  print(f"\n{preset} at {size}: largest difference {worst} uint8 levels")
  assert worst <= 1


def test_random_crop_given_its_box_is_torchvisions_resized_crop(photos):
  rng = np.random.default_rng(0)
  for photo in photos:
    for _ in range(3):
      box = transforms.random_resized_crop_box(photo.size, (0.08, 1.0), (3 / 4, 4 / 3), rng)
      ours = np.asarray(transforms.resized_crop(photo, box, 48))
      theirs = np.asarray(F.resized_crop(photo, *box, [48, 48], T.InterpolationMode.BILINEAR))
      np.testing.assert_array_equal(ours, theirs)


def _binned(boxes: np.ndarray, size: tuple[int, int], edges) -> np.ndarray:
  """Counts of (area share, log aspect ratio) of (top, left, height, width) boxes, per 2-D bin."""
  width, height = size
  area = boxes[:, 2] * boxes[:, 3] / (width * height)
  aspect = np.log(boxes[:, 3] / boxes[:, 2])
  return np.histogram2d(area, aspect, bins=edges)[0].ravel()


@pytest.mark.parametrize(
  "size, ratio, fallback",
  [((200, 150), (3 / 4, 4 / 3), None), ((400, 40), (3 / 4, 4 / 3), (0, 173, 40, 53)),
   ((120, 90), (1.0, 1.0), None)],
  ids=["photo", "strip: fallbacks", "square crops"],
)  # fmt: skip
def test_box_sampler_draws_torchvisions_distribution(size, ratio, fallback):
  """10,000 boxes from each sampler; per bin, |ours - theirs| <= 5 sigma of the difference of two
  binomial counts. The strip (10:1) makes most draws fail all 10 tries: the fallback's share."""
  draws, scale = 10_000, (0.08, 1.0)
  rng = np.random.default_rng(0)
  ours = np.array(
    [transforms.random_resized_crop_box(size, scale, ratio, rng) for _ in range(draws)]
  )
  torch.manual_seed(0)
  image = Image.new("RGB", size)
  theirs = np.array([T.RandomResizedCrop.get_params(image, scale, ratio) for _ in range(draws)])
  for boxes in (ours, theirs):
    top, left, height, width = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= size[1]).all() and (left + width <= size[0]).all()
  edges = [np.linspace(0, 1, 11), np.linspace(np.log(ratio[0]) - 0.5, np.log(ratio[1]) + 0.5, 7)]
  a, b = _binned(ours, size, edges), _binned(theirs, size, edges)
  p = (a + b) / (2 * draws)
  sigma = np.sqrt(2 * draws * p * (1 - p)) + 1e-9
  assert (np.abs(a - b) <= 5 * sigma + 1).all(), np.max(np.abs(a - b) / sigma)
  if fallback:  # The strip's centred 4:3 crop, to the pixel, as often in both.
    count, their_count = (sum(map(fallback.__eq__, map(tuple, boxes))) for boxes in (ours, theirs))
    assert count > draws / 3 and abs(count - their_count) <= 5 * np.sqrt(2 * count)
  positions = [np.histogram(boxes[:, 1] / np.maximum(1, size[0] - boxes[:, 3]), 5, (0, 1.0001))[0]
               for boxes in (ours, theirs)]  # fmt: skip
  p = (positions[0] + positions[1]) / (2 * draws)
  assert (np.abs(positions[0] - positions[1]) <= 5 * np.sqrt(2 * draws * p * (1 - p)) + 1).all()


def _folder(tmp_path, photos):
  for split in ("train", "test"):
    for c, photo in zip("ab" * 3, photos, strict=True):
      path = tmp_path / split / c / f"{photo.size[0]}x{photo.size[1]}.png"
      path.parent.mkdir(parents=True, exist_ok=True)
      photo.save(path)
  return tmp_path


def _process_batches(monkeypatch, data, processes: int, start: int, count: int) -> np.ndarray:
  """The images of `count` global training batches from `start`, as `processes` processes."""
  monkeypatch.setattr(jax, "process_count", lambda: processes)
  parts = []
  for index in range(processes):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    parts.append([b["image"] for b in itertools.islice(data.train_batches(start), count)])
  return np.stack([np.concatenate(step) for step in zip(*parts, strict=True)])


def test_imagenet_crops_are_drawn_per_step_and_position(tmp_path, photos, monkeypatch):
  """Non-square photos of six sizes through the data set: every crop is 40x40, drawn from (seed,
  step, position), so two processes and a restart at step 4 see what one process did."""
  config = _config(dataset=f"imagefolder:{_folder(tmp_path, photos)}", transforms="imagenet",
                   image_size=40, batch_size=2)  # fmt: skip
  data = dataset.create_dataset(config, ["train", "test"])
  steps = _process_batches(monkeypatch, data, 1, 0, 6)
  assert steps.shape == (6, 2, 40, 40, 3) and steps.dtype == np.uint8
  # Epochs 1 and 2 show the same photos, each in a new crop.
  assert not np.array_equal(
    np.sort(steps[:3].reshape(6, -1), 0), np.sort(steps[3:].reshape(6, -1), 0)
  )
  np.testing.assert_array_equal(_process_batches(monkeypatch, data, 2, 0, 6), steps)
  np.testing.assert_array_equal(_process_batches(monkeypatch, data, 1, 4, 2), steps[4:])
  config.seed = 1  # Another seed, other crops.
  other = _process_batches(monkeypatch, dataset.create_dataset(config, ["train"]), 1, 0, 6)
  assert not np.array_equal(other, steps)

  # Evaluation: Resize(46) + CenterCrop(40), torchvision's, on each file.
  batches = list(data.eval_batches("test"))
  mask = np.concatenate([b["mask"] for b in batches])
  images = np.concatenate([b["image"] for b in batches])[mask]
  reference = T.Compose([T.Resize(46), T.CenterCrop(40)])
  expected = {np.asarray(reference(photo)).tobytes() for photo in photos}
  assert {image.tobytes() for image in images} == expected


def test_eval_resize_from_the_config_the_weights_or_the_crop_fraction():
  imagenet = _config(transforms="imagenet", image_size=96)
  assert transforms.eval_resize(imagenet) == 110  # round(96 / 0.875)
  # What the converter records of torchvision's weights (no download: the enum's metadata).
  v1, v2 = (
    {"eval_transform": torch_to_flax.eval_transform_of(torch_to_flax.torchvision_weights(*w))}
    for w in (("resnet50", "IMAGENET1K_V1"), ("resnet50", "IMAGENET1K_V2"))
  )
  assert v2["eval_transform"] == {"resize_size": 232, "crop_size": 224}
  assert transforms.eval_resize(imagenet, v1) == 110  # 256 / 224, as 0.875.
  assert transforms.eval_resize(imagenet, v2) == 99  # round(96 * 232 / 224)
  assert transforms.eval_resize(_config(transforms="imagenet", image_size=224), v2) == 232
  imagenet.eval_resize = 128
  assert transforms.eval_resize(imagenet, v2) == 128
  assert transforms.eval_resize(_config(image_size=96), v2) == 96  # The paper's: image_size.
  assert transforms.flips(_config()) == (True, True)
  assert transforms.flips(imagenet) == (True, False)
  assert transforms.flips(_config(transforms="imagenet", vflip=True)) == (True, True)


@pytest.mark.parametrize(
  "overrides, message",
  [
    (
      {"transforms": "imagenet", "eval_resize": 100, "image_size": 128},
      "eval_resize = 100 is below",
    ),
    ({"eval_resize": 256}, "applies to transforms='imagenet' only"),
    ({"transforms": "imagenet", "crop_scale": (0.5, 0.1)}, r"crop_scale = \(0.5, 0.1\) must be"),
    ({"transforms": "imagenet", "crop_ratio": (0.0, 1.0)}, "crop_ratio"),
    ({"source_image_size": -1}, "source_image_size = -1 must be >= 0"),
    ({"transforms": "random"}, "'random' is unknown"),
  ],
)
def test_bad_transform_values_are_named(overrides, message):
  with pytest.raises(errors.UserError, match=message):
    transforms.from_config(_config(**overrides))
