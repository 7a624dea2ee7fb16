"""Host input throughput: jaxresnet's pipeline next to the paper's torchvision DataLoader.

Both read the same CIFAR-10 JPEGs (the first of each class in ../shared/datasets/
cifar10-jpeg.tar.gz, unpacked into a temporary folder) on the same CPU cores. jaxresnet's host work
is decoding and batching uint8 images at 32x32 (resizing, flips and normalization run on the
accelerator); the paper's does it all on the CPU with PIL and hands over float32 at 224x224.

  python -m scripts.bench_input --num_images 5000 --cores 2
"""

import torchvision  # noqa: F401  (before TensorFlow, which jaxresnet.input_pipeline imports)

# isort: split
import argparse
import itertools
import os
import platform
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torchvision import datasets, transforms

from configs import default
from jaxresnet import input_pipeline

TARBALL = Path(__file__).resolve().parents[2] / "shared/datasets/cifar10-jpeg.tar.gz"


def unpack(num_images: int, out: str) -> Path:
  """Unpacks num_images training JPEGs, as many per class, into out/cifar10-jpeg/train."""
  per_class = num_images // 10
  with tarfile.open(TARBALL) as tar:
    members = [
      m
      for m in tar
      if m.isfile() and m.name.split("/")[1] == "train" and int(Path(m.name).stem) < per_class
    ]
    tar.extractall(out, members=members, filter="data")
  return Path(out) / "cifar10-jpeg"


def images_per_second(batches: Iterator, num_images: int) -> float:
  """Throughput over num_images, after one warm-up batch (workers and threads starting)."""
  next(batches)
  start, seen = time.perf_counter(), 0
  while seen < num_images:
    seen += len(next(batches)["label"])
  return seen / (time.perf_counter() - start)


def jaxresnet_batches(root: Path, batch_size: int) -> Iterator[dict]:
  config = default.get_config()
  config.dataset = f"imagefolder:{root}"
  config.eval_split = "train"  # Only train/ was unpacked.
  config.batch_size = batch_size
  return input_pipeline.train_batches(config, input_pipeline.get_info(config))


def torchvision_batches(root: Path, batch_size: int, workers: int) -> Iterator[dict]:
  """The paper's pipeline: PIL transforms in DataLoader worker processes."""
  config = default.get_config()
  transform = transforms.Compose(
    [
      transforms.Resize(config.image_size),
      transforms.RandomHorizontalFlip(),
      transforms.RandomVerticalFlip(),
      transforms.ToTensor(),
      transforms.Normalize(config.mean, config.std),
    ]
  )
  loader = torch.utils.data.DataLoader(
    datasets.ImageFolder(root / "train", transform=transform),
    batch_size=batch_size,
    shuffle=True,
    num_workers=workers,
    drop_last=True,
    persistent_workers=workers > 0,
  )
  for image, label in itertools.chain.from_iterable(itertools.repeat(loader)):
    yield {"image": image, "label": label}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_images", type=int, default=5_000, help="timed, after a warm-up batch")
  parser.add_argument("--batch_size", type=int, default=128)
  available = len(os.sched_getaffinity(0))
  parser.add_argument("--cores", type=int, default=available, help="CPU cores both may use")
  args = parser.parse_args()

  # Both pipelines (tf.data's threads, the DataLoader's worker processes) share these cores.
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
  with tempfile.TemporaryDirectory() as tmp:
    root = unpack(args.num_images, tmp)
    # The DataLoader first: it forks its workers, safe only before JAX and TF start threads.
    paper = images_per_second(
      torchvision_batches(root, args.batch_size, workers=args.cores), args.num_images
    )
    ours = images_per_second(jaxresnet_batches(root, args.batch_size), args.num_images)

  ours_bytes, paper_bytes = 32 * 32 * 3, 224 * 224 * 3 * 4
  print(
    f"{platform.processor() or platform.machine()}, {args.cores} of {available} cores (1-min load "
    f"average {os.getloadavg()[0]:.1f}), {args.num_images} CIFAR-10 JPEGs, batch {args.batch_size}"
  )
  print(f"{'pipeline':<60} {'images/s':>9} {'bytes/image out':>16}")
  print(f"{'jaxresnet: tf.data decode + batch, uint8 32x32':<60} {ours:>9,.0f} {ours_bytes:>16,}")
  paper_name = f"torchvision: DataLoader, {args.cores} workers, PIL, float32 224x224"
  print(f"{paper_name:<60} {paper:>9,.0f} {paper_bytes:>16,}")
  print(f"{'ratio':<60} {ours / paper:>8.1f}x {paper_bytes / ours_bytes:>15.0f}x")


if __name__ == "__main__":
  main()
