"""A folder of photo-like images from CIFAR-10's JPEGs: larger than a model's input, non-square.

python -m scripts.make_photo_folder --output /tmp/photos --train-per-class 500 --test-per-class 100

Each 32x32 JPEG is blown up (PIL bicubic) to a random width in [200, 400] and height in
[150, 300], of either orientation, and saved as a JPEG (quality 90) under the same
`<split>/<class>/` path: the shapes and sizes of users' photos, with labels known, to try the
transforms presets and the host pipeline on (README, "Your own images").
"""

import argparse
import concurrent.futures
import os
import pathlib
import tempfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxresnet.data import cifar10_jpeg

WIDTHS, HEIGHTS = (200, 400), (150, 300)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output", type=pathlib.Path, required=True)
  parser.add_argument("--train-per-class", type=int, default=500)
  parser.add_argument("--test-per-class", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args(argv)


def blow_up(source: pathlib.Path, target: pathlib.Path, seed: int) -> tuple[int, int]:
  """Writes `source` resized to a random photo size (from `seed`) at `target`; returns it."""
  rng = np.random.default_rng(seed)
  size = int(rng.integers(*WIDTHS, endpoint=True)), int(rng.integers(*HEIGHTS, endpoint=True))
  if rng.random() < 0.5:  # Portrait as often as landscape.
    size = size[::-1]
  target.parent.mkdir(parents=True, exist_ok=True)
  with Image.open(source) as image:
    image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(target, quality=90)
  return size


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  if args.output.exists():
    raise SystemExit(f"error: --output {args.output} exists; choose a new folder.")
  with tempfile.TemporaryDirectory() as tmp:
    folder = cifar10_jpeg.unpack(tmp, {"train": args.train_per_class, "test": args.test_per_class})
    sources = sorted(folder.glob("*/*/*.jpg"))
    targets = [args.output / source.relative_to(folder) for source in sources]
    seeds = [args.seed * 10**7 + i for i in range(len(sources))]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
      sizes = list(pool.map(blow_up, sources, targets, seeds))
  widths, heights = np.array(sizes).T
  print(
    f"Wrote {len(sizes)} images to {args.output}: widths {widths.min()}-{widths.max()}, "
    f"heights {heights.min()}-{heights.max()}, {np.mean(widths != heights):.0%} non-square"
  )


if __name__ == "__main__":
  main()
