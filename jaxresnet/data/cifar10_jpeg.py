"""The CIFAR-10 JPEG folder that tests, benchmarks and the quick config read, in one place.

The data is a tarball of `cifar10-jpeg/{train,test}/<class>/NNNN.jpg` (5,000 training and 1,000
test images per class, 32x32 RGB JPEGs). It is found through the `JPEG_TARBALL` environment
variable, else at `../shared/datasets/cifar10-jpeg.tar.gz` beside the checkout.
`python -m scripts.make_cifar10_jpeg` builds the same layout from the official CIFAR-10 download.
"""

import os
import pathlib
import tarfile
from collections.abc import Mapping

from jaxresnet import errors

ENV_VAR = "JPEG_TARBALL"
_CHECKOUT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_TARBALL = _CHECKOUT.parent / "shared/datasets/cifar10-jpeg.tar.gz"
TOP_DIR = "cifar10-jpeg"  # The tarball's one top-level folder.
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLIT_SIZES = {"train": 5000, "test": 1000}  # Images per class.


def tarball() -> pathlib.Path:
  """Where the tarball is: $JPEG_TARBALL, else the default beside the checkout."""
  return pathlib.Path(os.environ.get(ENV_VAR) or DEFAULT_TARBALL).expanduser()


def member(split: str, class_name: str, index: int) -> str:
  """The tarball's name of one image, e.g. 'cifar10-jpeg/test/cat/0007.jpg'."""
  return f"{TOP_DIR}/{split}/{class_name}/{index:04d}.jpg"


def require_tarball() -> pathlib.Path:
  """The tarball's path, or an error that says where it was looked for and how to make it."""
  path = tarball()
  if not path.is_file():
    raise errors.UserError(
      f"The CIFAR-10 JPEG tarball is not at {path}: set {ENV_VAR}=/path/to/cifar10-jpeg.tar.gz, "
      "or build it from the official download with `python -m scripts.make_cifar10_jpeg "
      "--output cifar10-jpeg.tar.gz`."
    )
  return path


def unpack(out_dir: str | pathlib.Path, per_class: Mapping[str, int] | None = None) -> pathlib.Path:
  """Unpacks the first `per_class[split]` images of each class (all by default) into `out_dir`.

  Returns:
    The image folder, `out_dir/cifar10-jpeg`, with a `<split>/<class>/` folder per class.
  """
  limits = dict(SPLIT_SIZES, **(per_class or {}))
  with tarfile.open(require_tarball()) as tar:
    members = [
      m for m in tar
      if m.isfile() and int(pathlib.PurePath(m.name).stem) < limits.get(m.name.split("/")[1], 0)
    ]  # fmt: skip
    tar.extractall(out_dir, members=members, filter="data")
  return pathlib.Path(out_dir) / TOP_DIR
