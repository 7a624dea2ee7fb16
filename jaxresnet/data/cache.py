"""Image folders decoded once: every file of a split decoded by PIL, resized, and kept on disk.

`config.cache_dir` ("" = off) turns it on. Each image is stored as `Resize(side)` of it would
give it (torchvision's shorter-side resize, PIL bilinear), `side` being what the run's
evaluation resizes to (`transforms.HostTransform.resize`: image_size for the paper preset,
eval_resize for imagenet). The transforms then run on the stored image, where that resize is a
no-op, so the paper preset and imagenet's evaluation give exactly the pixels they give uncached;
imagenet's random crops are drawn from the stored image instead of the original (a crop of the
same share of the image, resampled once more).

A cache is one folder, named by a hash of its key: every file's path, size and mtime, the side,
and this format's version. A change to any of them builds another. The
folder holds `pixels.u8` (every image's bytes, one after another) and `index.npz` (offsets and
shapes); it is built under a temporary name and renamed when complete, so a killed build leaves
nothing that is read. Building states the size it will take, checks the free disk space first,
decodes in a thread pool with a progress line, reports the images' size distribution, warns when
most are blown up more than 4x, and names every unreadable file at once, before training starts.
"""

import collections
import concurrent.futures
import hashlib
import json
import os
import pathlib
import shutil
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging
from PIL import Image

from jaxresnet import errors, reporting
from jaxresnet.data import decode, transforms

VERSION = 1
_INDEX, _PIXELS, _INFO = "index.npz", "pixels.u8", "info.json"


class CachedImages:
  """The images of one cache, by index, as RGB PIL images (read from a memory map)."""

  def __init__(self, directory: pathlib.Path):
    index = np.load(directory / _INDEX)
    self._offsets, self._shapes = index["offsets"], index["shapes"]
    self._pixels = np.memmap(directory / _PIXELS, np.uint8, "r") if self._offsets[-1] else None

  def __len__(self) -> int:
    return len(self._shapes)

  def rgb(self, index: int) -> Image.Image:
    start, end = self._offsets[index], self._offsets[index + 1]
    return Image.fromarray(np.asarray(self._pixels[start:end]).reshape(self._shapes[index]))


def cached_images(paths: Sequence[str], transform: transforms.HostTransform,
                  cache_dir: str) -> CachedImages:  # fmt: skip
  """The cache of `paths` for `transform`, built first if it is not there."""
  side = transform.resize
  stats = [os.stat(path) for path in paths]  # A missing file fails here, before any work.
  key = {
    "version": VERSION,
    "side": side,
    "files": [[str(p), s.st_size, s.st_mtime_ns] for p, s in zip(paths, stats, strict=True)],
  }
  digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]
  directory = pathlib.Path(cache_dir).expanduser() / f"images-{digest}"
  if not (directory / _INFO).is_file():
    _build(directory, paths, transform, sum(s.st_size for s in stats))
  else:
    logging.info("Image cache hit: %d images in %s", len(paths), directory)
  return CachedImages(directory)


def _stored(path: str, transform: transforms.HostTransform) -> tuple[np.ndarray, tuple[int, int]]:
  """The image as the cache stores it, and its own (width, height)."""
  image = decode.read_rgb(path)
  return np.asarray(transforms.resize_shorter_side(image, transform.resize)), image.size


def _build(directory: pathlib.Path, paths: Sequence[str], transform: transforms.HostTransform,
           file_bytes: int) -> None:  # fmt: skip
  """Decodes every file once into `directory` (see the module docstring)."""
  estimate = _estimated_bytes(paths, transform)
  directory.parent.mkdir(parents=True, exist_ok=True)
  free = shutil.disk_usage(directory.parent).free
  if estimate > 0.9 * free:
    raise errors.UserError(
      f"The image cache for {len(paths)} images needs about {estimate / 2**30:.1f} GiB in "
      f"{directory.parent}, which has {free / 2**30:.1f} GiB free: point --config.cache_dir at a "
      "larger disk, lower --config.image_size, or set --config.cache_dir='' (no cache)."
    )
  logging.info(
    "Building the image cache of %d images (%.1f MiB of files, about %.1f GiB decoded) in %s",
    len(paths), file_bytes / 2**20, estimate / 2**30, directory,
  )  # fmt: skip
  staging = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  staging.mkdir()
  shapes, sizes, unreadable = [], [], {}
  try:
    with (
      open(staging / _PIXELS, "wb") as out,
      concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool,
      reporting.ImageProgress(len(paths), sys.stderr) as progress,
    ):
      for path, future in zip(paths, _in_order(pool, transform, paths), strict=True):
        try:
          pixels, size = future.result()
        except errors.UserError as error:
          unreadable[path] = str(error)
          pixels, size = np.zeros((0, 0, 3), np.uint8), (0, 0)
        out.write(pixels.tobytes())
        shapes.append(pixels.shape)
        sizes.append(size)
        progress.update(1)
    if unreadable:
      raise errors.UserError(
        f"{len(unreadable)} of the {len(paths)} images cannot be read; replace or delete them "
        "and launch again:\n" + "\n".join(unreadable.values())
      )
    offsets = np.concatenate([[0], np.cumsum([np.prod(s) for s in shapes])]).astype(np.int64)
    np.savez(staging / _INDEX, offsets=offsets, shapes=np.array(shapes, np.int64))
    report = _report(np.array(sizes), transform)
    (staging / _INFO).write_text(json.dumps({"images": len(paths), **report}, indent=2))
    try:
      staging.rename(directory)
    except OSError:  # Another process of the run finished the same cache first.
      if not (directory / _INFO).is_file():
        raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _in_order(pool: concurrent.futures.Executor, transform: transforms.HostTransform,
              paths: Sequence[str]) -> Iterator[concurrent.futures.Future]:  # fmt: skip
  """The decoding of each path, in order, at most 4 per thread ahead: memory stays bounded."""
  window = collections.deque()
  for path in paths:
    window.append(pool.submit(_stored, path, transform))
    if len(window) > 4 * (os.cpu_count() or 1):
      yield window.popleft()
  yield from window


def _estimated_bytes(paths: Sequence[str], transform: transforms.HostTransform,
                     samples: int = 64) -> int:  # fmt: skip
  """The decoded size, from the headers of `samples` files spread over the list."""
  side = transform.resize
  areas = [
    side * side * max(size) / max(1, min(size)) for size in decode.sampled_sizes(paths, samples)
  ]
  return int(3 * len(paths) * (np.mean(areas) if areas else side * side))


def _report(sizes: np.ndarray, transform: transforms.HostTransform) -> dict:
  """Logs the images' size distribution, and warns when most are blown up over 4x."""
  shorter = sizes.min(axis=1)
  quantiles = np.percentile(shorter, [0, 50, 100]).astype(int).tolist()
  widths, heights = sizes.T
  logging.info(
    "Image sizes: shorter side min %d, median %d, max %d; %.0f%% not square",
    *quantiles, 100 * np.mean(widths != heights),
  )  # fmt: skip
  blown_up = float(np.mean(4 * shorter < transform.resize))
  if blown_up > 0.5:
    logging.warning(
      "%.0f%% of the images are blown up more than 4x (their shorter side, median %d, to %d): a "
      "smaller --config.image_size trains faster on as much detail.", 100 * blown_up,
      quantiles[1], transform.resize,
    )  # fmt: skip
  return {"shorter_side": dict(zip(("min", "median", "max"), quantiles, strict=True)),
          "blown_up_over_4x": blown_up}  # fmt: skip
