"""Test-session setup.

torchvision must be imported before TensorFlow (tfds, clu.metric_writers): the other order
segfaults, because the two ship clashing LLVMs. pytest imports this file first.
"""

import torchvision  # noqa: F401  (import order matters, see above)

# isort: split
import tarfile
from pathlib import Path

import pytest

from tests import torch_utils
from tests.torch_utils import CIFAR10_JPEG_TARBALL


@pytest.fixture(scope="session")
def cifar_jpeg_root(tmp_path_factory):
  """Factory: (per_class_train, per_class_test) -> an image folder of real CIFAR-10 JPEGs.

  The folder has train/ and test/ with the 10 class folders, each holding its first images
  (0000.jpg, ...); it is unpacked once per argument pair and session.
  """
  if not CIFAR10_JPEG_TARBALL.is_file():
    pytest.fail(f"{CIFAR10_JPEG_TARBALL} is missing: see ../shared/datasets/README.md.")
  roots = {}

  def make(per_class_train: int, per_class_test: int) -> Path:
    if (per_class_train, per_class_test) not in roots:
      limit = {"train": per_class_train, "test": per_class_test}
      out = tmp_path_factory.mktemp(f"cifar10_jpeg_{per_class_train}_{per_class_test}")
      with tarfile.open(CIFAR10_JPEG_TARBALL) as tar:
        # Names are cifar10-jpeg/<split>/<class>/NNNN.jpg.
        members = [
          m for m in tar if m.isfile() and int(Path(m.name).stem) < limit[m.name.split("/")[1]]
        ]
        tar.extractall(out, members=members, filter="data")
      roots[per_class_train, per_class_test] = out / "cifar10-jpeg"
    return roots[per_class_train, per_class_test]

  return make


@pytest.fixture(scope="session")
def cifar_jpeg_subset(cifar_jpeg_root) -> Path:
  """An image folder of real CIFAR-10 JPEGs: 10 classes x (30 train, 10 test)."""
  return cifar_jpeg_root(30, 10)


@pytest.fixture
def exact_matmuls():
  """Full-precision matmuls in JAX and torch (no TF32 on a GPU), for parity tests."""
  with torch_utils.exact_matmuls():
    yield
