"""The image folders of `scripts/compare_torch.py`: the CIFAR-10 JPEGs of some classes.

Each folder is `ROOT/train/<class>/` and `ROOT/test/<class>/`, the layout torchvision's
`ImageFolder` reads and jaxresnet's `imagefolder:ROOT` data set reads, so both frameworks train
and test on the same files. Folders are kept in a cache and reused when they already hold what
is asked for (the `.complete` marker is written last, so an interrupted build is redone).
"""

import hashlib
import json
import pathlib
import shutil

from jaxresnet import errors
from jaxresnet.data import cifar10_jpeg

MARKER = ".complete"


def class_folder(
  cache: pathlib.Path, classes: tuple[str, ...], per_class: dict[str, int]
) -> pathlib.Path:
  """A folder in `cache` holding the first `per_class[split]` JPEGs of each of `classes`.

  Args:
    cache: where folders are kept, each named by what it holds.
    classes: CIFAR-10 class names, e.g. ("dog", "frog").
    per_class: images per class and split, e.g. {"train": 500, "test": 200}.
  """
  wanted = {"classes": sorted(classes), "per_class": per_class}
  digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]
  root = cache / f"cifar10-{digest}"
  marker = root / MARKER
  if marker.is_file():
    return root
  unknown = sorted(set(classes) - set(cifar10_jpeg.CLASSES))
  if unknown:
    raise errors.UserError(f"Not CIFAR-10 classes: {unknown}; choose from {cifar10_jpeg.CLASSES}.")
  shutil.rmtree(root, ignore_errors=True)
  staging = root.with_name(f"{root.name}.unpacking")
  shutil.rmtree(staging, ignore_errors=True)
  unpacked = cifar10_jpeg.unpack(staging, per_class)  # Every class: the tarball has no index.
  for split in per_class:
    (root / split).mkdir(parents=True)
    for name in classes:
      (unpacked / split / name).rename(root / split / name)
  shutil.rmtree(staging)
  marker.write_text(json.dumps(wanted))
  return root


def count_images(root: pathlib.Path, split: str) -> int:
  """The number of images in `root/split/*/`."""
  return sum(1 for p in (root / split).glob("*/*") if p.is_file())
