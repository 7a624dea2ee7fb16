"""Test-session setup.

torchvision must be imported before TensorFlow (tfds, clu.metric_writers): the other order
segfaults, because the two ship clashing LLVMs. pytest imports this file first.
"""

import torchvision  # noqa: F401  (import order matters, see above)

# isort: split
import logging
from pathlib import Path

import pytest

from jaxresnet import train
from jaxresnet.data import cifar10_jpeg
from tests import torch_utils, train_helpers


@pytest.fixture(scope="session")
def cifar_jpeg_root(tmp_path_factory):
  """Factory: (per_class_train, per_class_test) -> an image folder of real CIFAR-10 JPEGs.

  The folder has train/ and test/ with the 10 class folders, each holding its first images
  (0000.jpg, ...); it is unpacked once per argument pair and session, from $JPEG_TARBALL or
  ../shared/datasets/cifar10-jpeg.tar.gz (`jaxresnet/data/cifar10_jpeg.py`).
  """
  try:
    cifar10_jpeg.require_tarball()
  except FileNotFoundError as error:
    pytest.fail(str(error))
  roots = {}

  def make(per_class_train: int, per_class_test: int) -> Path:
    key = per_class_train, per_class_test
    if key not in roots:
      out = tmp_path_factory.mktemp(f"cifar10_jpeg_{per_class_train}_{per_class_test}")
      roots[key] = cifar10_jpeg.unpack(out, {"train": per_class_train, "test": per_class_test})
    return roots[key]

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


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """One XLA compilation cache for the session's training subprocesses (they inherit the
  environment): the same tiny run launched again, as the resume tests do, compiles nothing."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("xla_cache")))
    yield


@pytest.fixture(scope="session")
def cifar_root(cifar_jpeg_root) -> Path:
  """The real-data folder of the training tests (train_helpers.TRAIN_PER_CLASS per class)."""
  return cifar_jpeg_root(train_helpers.TRAIN_PER_CLASS, train_helpers.TEST_PER_CLASS)


class _InfoLines(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []

  def emit(self, record: logging.LogRecord) -> None:
    if record.levelno == logging.INFO:
      self.lines.append(record.getMessage())


@pytest.fixture(scope="session")
def mock_run(tmp_path_factory):
  """A finished 2-epoch run in process on mocked TFDS CIFAR-10 (`train_helpers.mock_config`).

  Returns (workdir, results, the INFO lines it logged, config).
  """
  root = tmp_path_factory.mktemp("mock_run")
  config = train_helpers.mock_config(root / "tfds")
  handler, logger = _InfoLines(), logging.getLogger("absl")
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    with train_helpers.mocked_cifar10():
      results = train.train_and_evaluate(config, str(root / "run"))
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  return root / "run", results, handler.lines, config


@pytest.fixture(scope="session")
def finished_tiny_run(cifar_root, tmp_path_factory) -> Path:
  """A finished, never interrupted TINY run of resnet18 through the CLI; its stderr beside it."""
  workdir = tmp_path_factory.mktemp("tiny") / "reference"
  result = train_helpers.run_train(workdir, cifar_root, train_helpers.TINY)
  (workdir.parent / "stderr.txt").write_text(result.stderr)
  return workdir
