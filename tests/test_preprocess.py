"""On-device preprocessing against the paper's torchvision transforms on PIL images, and flips."""

import jax
import ml_collections
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from configs import default
from convert import transforms as paper_transforms
from jaxresnet import preprocess as pp

# Binomial bounds: a count of n draws with probability p lies within 5 standard deviations of n*p
# with probability 1 - 6e-7.
SIGMAS = 5


def _config(**overrides) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.update(overrides)
  return config


def _jitted(config: ml_collections.ConfigDict):
  return jax.jit(lambda images: pp.preprocess(images, config))


def _cifar_test_images(root, count: int) -> list[Image.Image]:
  paths = sorted((root / "test").glob("*/*.jpg"))[:count]
  return [Image.open(path).convert("RGB") for path in paths]


@pytest.fixture
def one_torch_thread():
  """torch's threads fight over the few busy cores of a CI machine (40x slower on two here)."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.mark.parametrize("image_size", [224, 50, 16])
def test_matches_torchvision_transforms_on_real_images(
  cifar_jpeg_subset, one_torch_thread, image_size
):
  images = _cifar_test_images(cifar_jpeg_subset, 100)
  batch = np.stack([np.asarray(image) for image in images])
  config = _config(image_size=image_size)

  # Before normalization: exactly the pixels of torchvision's Resize (PIL's bilinear).
  unnormalized = _jitted(_config(image_size=image_size, mean=(0, 0, 0), std=(1, 1, 1)))(batch)
  resized = np.stack([np.asarray(transforms.Resize(image_size)(image)) for image in images])
  levels = np.asarray(unnormalized) * 255
  assert np.abs(levels - resized).max() < 1e-3

  # After: what the torch model would be fed, up to float32 rounding.
  paper = paper_transforms.paper_transform(image_size)
  expected = torch.stack([paper(image) for image in images]).permute(0, 2, 3, 1).numpy()
  ours = _jitted(config)(batch)
  assert ours.dtype == np.float32 and ours.shape == (100, image_size, image_size, 3)
  assert np.abs(np.asarray(ours) - expected).max() <= 2e-6  # A few float32 ulps.


def _pixels(images: np.ndarray, config: ml_collections.ConfigDict, rng=None) -> np.ndarray:
  """Preprocessed images, unnormalized back to uint8 levels (exact integers, unlike floats)."""
  config = config.copy_and_resolve_references()
  config.mean, config.std = (0, 0, 0), (1, 1, 1)
  return np.rint(np.asarray(pp.preprocess(images, config, rng=rng)) * 255).astype(np.uint8)


def _flip_kinds(flipped: np.ndarray, plain: np.ndarray) -> np.ndarray:
  """Per image: 0 unflipped, 1 mirrored left-right, 2 upside-down, 3 both; asserts one matches."""
  candidates = np.stack([plain, plain[:, :, ::-1], plain[:, ::-1], plain[:, ::-1, ::-1]])
  matches = (candidates == flipped[None]).all(axis=(2, 3, 4))
  assert (matches.sum(axis=0) == 1).all(), "every image must be exactly one mirror of itself"
  return matches.argmax(axis=0)


def test_flips_are_exact_mirrors_each_half_the_time_independently():
  n = 2000
  images = np.random.default_rng(0).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
  config = _config(image_size=4)
  kinds = _flip_kinds(_pixels(images, config, jax.random.key(0)), _pixels(images, config))
  for flipped in (kinds & 1, kinds >> 1):  # Horizontal, vertical.
    assert abs(flipped.sum() - n / 2) < SIGMAS * np.sqrt(n / 4)
  # Independence: each of the four combinations a quarter of the time.
  for count in np.bincount(kinds, minlength=4):
    assert abs(count - n / 4) < SIGMAS * np.sqrt(n * 3 / 16)


def test_flips_at_full_size_are_exact_mirrors():
  images = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
  config = _config()
  kinds = _flip_kinds(_pixels(images, config, jax.random.key(3)), _pixels(images, config))
  assert len(set(kinds)) > 1


@pytest.mark.parametrize(
  ("hflip", "vflip", "allowed"), [(False, True, {0, 2}), (True, False, {0, 1}), (False, False, {0})]
)
def test_flips_can_be_switched_off(hflip, vflip, allowed):
  images = np.random.default_rng(2).integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
  config = _config(image_size=4, hflip=hflip, vflip=vflip)
  kinds = _flip_kinds(_pixels(images, config, jax.random.key(0)), _pixels(images, config))
  assert set(kinds) == allowed


def test_flips_follow_the_key():
  images = np.random.default_rng(3).integers(0, 256, (64, 4, 4, 3), dtype=np.uint8)
  config = _config(image_size=4)
  rng = jax.random.key(0)
  step_0 = pp.preprocess(images, config, rng=jax.random.fold_in(rng, 0))
  step_1 = pp.preprocess(images, config, rng=jax.random.fold_in(rng, 1))
  np.testing.assert_array_equal(
    step_0, pp.preprocess(images, config, rng=jax.random.fold_in(rng, 0))
  )
  assert not np.array_equal(step_0, step_1)


def test_runs_under_jit():
  images = np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  config = _config()
  jitted = jax.jit(lambda x, rng: pp.preprocess(x, config, rng=rng))
  # Fused differently, the normalization may round differently in the last bit.
  np.testing.assert_allclose(
    jitted(images, jax.random.key(5)),
    pp.preprocess(images, config, rng=jax.random.key(5)),
    rtol=0,
    atol=1e-6,
  )
