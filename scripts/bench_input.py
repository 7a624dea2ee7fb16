"""Host input throughput: jaxresnet's pipeline next to the paper's torchvision DataLoader.

Both read the same CIFAR-10 JPEGs (the first of each class in the training split of the CIFAR-10
JPEG tarball, `jaxresnet.data.cifar10_jpeg`: $JPEG_TARBALL, else ../shared/datasets/, unpacked
into a temporary folder) on the same CPU cores. jaxresnet's host work is decoding and batching
uint8 images at 32x32 (resizing, flips and normalization run on the accelerator); the paper's does
it all on the CPU with PIL and hands over float32 at 224x224.

  python -m scripts.bench_input --num_images 5000 --cores 2 --json runs/bench_input.json
"""

# isort: off
# Before anything that may import TensorFlow (the TFDS source): the other order segfaults.
import torchvision  # noqa: F401

# isort: on
import argparse
import collections
import itertools
import os
import pathlib
import sys
import tempfile
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `configs` and `scripts` are not installed packages.

from configs import default  # noqa: E402
from jaxresnet.data import cifar10_jpeg  # noqa: E402
from scripts import bench_cases, bench_report  # noqa: E402
from scripts.bench_timing import timed  # noqa: E402

OURS_BYTES, PAPER_BYTES = 32 * 32 * 3, 224 * 224 * 3 * 4  # One image as each hands it over.


def images_per_second(batches: Iterator, num_images: int, batch_size: int) -> float:
  """Throughput over num_images (whole batches), after one warm-up batch (workers starting)."""
  next(batches)
  steps = -(-num_images // batch_size)
  # A zero-length deque drains the iterator without keeping a batch.
  _, seconds = timed(lambda: collections.deque(itertools.islice(batches, steps), maxlen=0))
  return steps * batch_size / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_images", type=int, default=5_000, help="timed, after a warm-up batch")
  parser.add_argument("--batch_size", type=int, default=128)
  available = len(os.sched_getaffinity(0))
  parser.add_argument("--cores", type=int, default=available, help="CPU cores both may use")
  parser.add_argument("--json", default="", help="Also write the rates and machine info here.")
  args = parser.parse_args()

  # Both pipelines (the decoding threads, the DataLoader's worker processes) share these cores.
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
  meta = bench_report.host_info(args)
  config = default.get_config()
  config.batch_size = args.batch_size
  config.eval_split = "train"  # Only train/ is unpacked.
  with tempfile.TemporaryDirectory() as tmp:
    per_class = {"train": args.num_images // len(cifar10_jpeg.CLASSES), "test": 0}
    root = cifar10_jpeg.unpack(tmp, per_class)
    # The DataLoader first: it forks its workers, safe only before JAX and TF start threads.
    paper = images_per_second(
      bench_cases.torch_train_batches(root, config, args.cores, pin_memory=False),
      args.num_images,
      args.batch_size,
    )
    ours = images_per_second(
      bench_cases.jax_train_batches(config, root), args.num_images, args.batch_size
    )
  meta["loadavg_end"] = os.getloadavg()

  print(
    f"{meta['cpu']}, {args.cores} of {available} cores (1-min load average "
    f"{meta['loadavg_end'][0]:.1f}), {args.num_images} CIFAR-10 JPEGs, batch {args.batch_size}, "
    f"{bench_report.git_label(meta)}"
  )
  paper_name = f"torchvision: DataLoader, {args.cores} workers, PIL, float32 224x224"
  results = [
    {
      "pipeline": "jaxresnet: PIL decode in threads + batch, uint8 32x32",
      "img_s": ours,
      "bytes_per_image": OURS_BYTES,
    },
    {"pipeline": paper_name, "img_s": paper, "bytes_per_image": PAPER_BYTES},
  ]
  print(f"{'pipeline':<60} {'images/s':>9} {'bytes/image out':>16}")
  for row in results:
    print(f"{row['pipeline']:<60} {row['img_s']:>9,.0f} {row['bytes_per_image']:>16,}")
  print(f"{'ratio':<60} {ours / paper:>8.1f}x {PAPER_BYTES / OURS_BYTES:>15.0f}x")
  if args.json:
    bench_report.write_json(args.json, meta, results)


if __name__ == "__main__":
  main()
