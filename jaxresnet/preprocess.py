"""On-device preprocessing: the device's half of torchvision's transforms, inside the jitted steps.

The host ships uint8 images at the size its transforms leave them (`data/transforms.py`; 32x32
for CIFAR-10, 196x fewer bytes than float32 at 224x224); resizing them to image_size if needed,
flipping and normalizing happen here, on the accelerator.

The resize reproduces PIL's bilinear resampling (what torchvision's `Resize` does to PIL images)
bit for bit: the same weights in the same 22-bit fixed point, the width pass rounded to uint8
before the height pass, with exact integer sums. A model therefore sees exactly the pixels it would
see in the PyTorch pipeline, at any source and target size (a plain float resize is off by one level
on about 15% of the pixels).
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxresnet import errors
from jaxresnet.data import transforms

# ImageNet's per-channel statistics, which torchvision's weights expect (configs' mean and std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PIL's fixed point for 8-bit images (libImaging/Resample.c: 32 - 8 - 2 bits).
_PRECISION_BITS = 22


def preprocess(
  images: jax.Array, config: ml_collections.ConfigDict, *, rng: jax.Array | None = None
) -> jax.Array:
  """Resizes, optionally flips, and normalizes a batch of images.

  Args:
    images: uint8 [B, H, W, 3].
    config: reads `image_size`, `mean`, `std`, and for training the flips
      (`transforms.flips`: `hflip`, `vflip`, the `transforms` preset's).
    rng: None for evaluation (no flips); for training a key, already folded with the step, that
      draws each image's horizontal and vertical flip independently with p = 0.5.

  Returns:
    float32 [B, image_size, image_size, 3], normalized as torchvision's `ToTensor` + `Normalize`.
  """
  images = jnp.asarray(images, jnp.float32)  # Whole numbers, 0..255, until normalized.
  if rng is not None:
    # Flipping commutes exactly with the (mirror-symmetric) resize, and is cheaper before it.
    hflip, vflip = transforms.flips(config)
    images = _random_flips(images, rng, hflip=hflip, vflip=vflip)
  images = _resize_like_pil(images, config.image_size)
  mean = jnp.asarray(config.mean, jnp.float32)
  std = jnp.asarray(config.std, jnp.float32)
  return (images / 255.0 - mean) / std


def _random_flips(images: jax.Array, rng: jax.Array, *, hflip: bool, vflip: bool) -> jax.Array:
  """Mirrors each image left-right and (independently) upside-down, each with p = 0.5."""
  h_rng, v_rng = jax.random.split(rng)
  flip_shape = (images.shape[0], 1, 1, 1)
  if hflip:
    images = jnp.where(jax.random.bernoulli(h_rng, 0.5, flip_shape), images[:, :, ::-1], images)
  if vflip:
    images = jnp.where(jax.random.bernoulli(v_rng, 0.5, flip_shape), images[:, ::-1], images)
  return images


def _resize_like_pil(images: jax.Array, size: int) -> jax.Array:
  """Resizes [B, H, W, C] images of whole numbers 0..255 to [B, size, size, C] exactly as PIL.

  Half-pixel centres; antialiased (a widened triangle) when shrinking, as PIL always is.
  """
  _, height, width, _ = images.shape
  if width != size:
    images = _resample(images, _pil_bilinear_weights(width, size), "bhwc,ow->bhoc")
  if height != size:
    images = _resample(images, _pil_bilinear_weights(height, size), "bhwc,oh->bowc")
  return images


def _resample(images: jax.Array, weights: np.ndarray, subscripts: str) -> jax.Array:
  """One PIL resampling pass: fixed-point weighted sums, rounded half up, clipped to 0..255.

  The sums must be exact integers (up to 255 * 2**22), yet run on the fast float32 matrix units:
  each weight is split as 256 * high + low, and both partial sums stay below 2**24, where float32
  counts exactly (255 * 2**14 for the highs; 255 * 255 * 257 taps at most for the lows).
  """
  high, low = np.divmod(weights, 256)
  partial_sums = [
    jnp.einsum(subscripts, images, part.astype(np.float32), precision=jax.lax.Precision.HIGHEST)
    for part in (high, low)
  ]
  total = partial_sums[0].astype(jnp.int32) * 256 + partial_sums[1].astype(jnp.int32)
  rounded = (total + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS
  return jnp.clip(rounded, 0, 255).astype(jnp.float32)


@functools.cache
def _pil_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
  """PIL's bilinear weights [out_size, in_size] in its fixed point (Resample.c precompute_coeffs).

  Written with Python floats in PIL's order of operations, so every weight rounds as in C.
  """
  if in_size > 128 * out_size:  # More taps than _resample sums exactly.
    raise errors.UserError(
      f"Shrinking {in_size} to {out_size} pixels (over 128x) is not supported: raise "
      "config.image_size or lower config.source_image_size."
    )
  scale = in_size / out_size
  filter_scale = max(scale, 1.0)
  weights = np.zeros((out_size, in_size), np.int32)
  for out in range(out_size):
    center = (out + 0.5) * scale
    lo = max(int(center - filter_scale + 0.5), 0)
    hi = min(int(center + filter_scale + 0.5), in_size)
    taps = [max(0.0, 1.0 - abs((x - center + 0.5) * (1.0 / filter_scale))) for x in range(lo, hi)]
    total = sum(taps)
    weights[out, lo:hi] = [int(0.5 + tap / total * (1 << _PRECISION_BITS)) for tap in taps]
  return weights
