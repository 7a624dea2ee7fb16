"""Host images/s of an image folder's input pipeline, with and without the decode-once cache.

python -m scripts.bench_cache --folder /tmp/cifar10-jpeg --image-size 64 --cache-dir /tmp/cache

Times, on this host only (no device step): building the cache (every file decoded once, before
step 1), then one training epoch of batches read from the cache, and one decoded from the files
as without a cache (`config.cache_dir=""`), alternately, `--rounds` times; the fastest of each.
A folder of large photos (`python -m scripts.make_photo_folder`) is where decoding costs most.
"""

import argparse
import json
import shutil
import time
from collections.abc import Sequence

from configs import default
from jaxresnet.data import dataset, transforms


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--folder", required=True, help="An image folder (ROOT/train/<class>/...).")
  parser.add_argument("--image-size", type=int, default=64)
  parser.add_argument("--transforms", default="paper", choices=("paper", "imagenet"))
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--cache-dir", required=True, help="Emptied first; removed at the end.")
  parser.add_argument("--rounds", type=int, default=2)
  return parser.parse_args(argv)


def epoch_rate(data: dataset.Dataset, images: int, batch_size: int) -> float:
  """Images/s of one epoch of training batches, as the train loop would draw them."""
  start = time.perf_counter()
  batches = data.train_batches()
  for _ in range(images // batch_size):
    next(batches)
  batches.close()
  return images // batch_size * batch_size / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  shutil.rmtree(args.cache_dir, ignore_errors=True)
  config = default.get_config()
  config.update(
    dataset=f"imagefolder:{args.folder}", image_size=args.image_size, transforms=args.transforms,
    batch_size=args.batch_size, cache_dir=args.cache_dir,
  )  # fmt: skip
  plain = dataset.create_dataset(config, [config.train_split])
  images = plain.info.num_examples[config.train_split]
  start = time.perf_counter()
  cached = plain.prepared(transforms.eval_resize(config))
  build = time.perf_counter() - start
  config.cache_dir = ""
  uncached = dataset.create_dataset(config, [config.train_split])
  rates = {"cached": [], "uncached": []}
  for _ in range(args.rounds):
    rates["cached"].append(epoch_rate(cached, images, args.batch_size))
    rates["uncached"].append(epoch_rate(uncached, images, args.batch_size))
  result = {
    "folder": args.folder, "images": images, "image_size": args.image_size,
    "transforms": args.transforms, "build_s": build, "build_img_s": images / build,
    "cached_epoch_img_s": max(rates["cached"]), "uncached_epoch_img_s": max(rates["uncached"]),
  }  # fmt: skip
  result["speedup"] = result["cached_epoch_img_s"] / result["uncached_epoch_img_s"]
  print(json.dumps(result, indent=2))
  shutil.rmtree(args.cache_dir, ignore_errors=True)


if __name__ == "__main__":
  main()
