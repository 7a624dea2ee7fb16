"""Where examples come from: TFDS CIFAR-10 and image folders, each split listed or loaded once.

A source is built once per run (a folder is scanned once, a TFDS builder prepared once) and turns
split strings in TFDS's syntax (`train`, `train[:90%]`, `train[10:20]+test`) into `Split`s.
TensorFlow is imported only when a TFDS split is read (TFDS itself imports it lazily), so image
folders, and the modules that import this one, work without it.
"""

import dataclasses
import pathlib
import random
from typing import Protocol

import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from jaxresnet import errors, network
from jaxresnet.data import decode

IMAGEFOLDER = "imagefolder:"
_CIFAR10_HOST = ("www.cs.toronto.edu", 443)  # Where TFDS downloads CIFAR-10 from.


@dataclasses.dataclass(frozen=True)
class Split:
  """The examples of one split string, by index: decoded in memory, or as files to decode."""

  labels: np.ndarray  # int32 [N].
  image_shape: tuple[int, int, int]  # Height, width, 3 of every image the split serves.
  images: np.ndarray | None = None  # uint8 [N, H, W, 3] (TFDS).
  paths: np.ndarray | None = None  # str [N] (image folders).


class Source(Protocol):
  class_names: tuple[str, ...]

  def split(self, spec: str) -> Split: ...


def create_source(config: ml_collections.ConfigDict) -> Source:
  """The source `config.dataset` names: "cifar10" (TFDS) or "imagefolder:PATH"."""
  if config.dataset == "cifar10":
    return TfdsCifar10(config.data_dir)
  if config.dataset.startswith(IMAGEFOLDER):
    folder = ImageFolder(config.dataset.removeprefix(IMAGEFOLDER), config.source_image_size)
    folder.warn_if_shrunk(config.image_size)
    return folder
  raise errors.UserError(
    f"config.dataset = {config.dataset!r} is unknown: use 'cifar10' or 'imagefolder:PATH' "
    "(PATH/train/<class>/*.jpg, PATH/test/<class>/*.jpg)."
  )


class TfdsCifar10:
  """CIFAR-10 through TFDS: downloaded and prepared once if needed, splits read into memory."""

  def __init__(self, data_dir: str):
    self._builder = _prepared_cifar10(data_dir)
    self.class_names = tuple(self._builder.info.features["label"].names)

  def split(self, spec: str) -> Split:
    # batch_size=-1 would read it in one go, but aborts under tfds.testing.mock_data.
    dataset = self._builder.as_dataset(split=spec, shuffle_files=False).batch(4096)
    batches = list(dataset.as_numpy_iterator())
    images = np.concatenate([batch["image"] for batch in batches])
    labels = np.concatenate([batch["label"] for batch in batches]).astype(np.int32)
    return Split(labels=labels, image_shape=images.shape[1:], images=images)


def _prepared_cifar10(data_dir: str):
  """The CIFAR-10 builder, downloaded and prepared if it was not; offline, fails fast.

  TFDS retries a failing download for minutes (about 205 s here); a quick probe of the download
  host turns that into an immediate error that says what to do.
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415  (TFDS users only)

  builder = tfds.builder("cifar10", data_dir=data_dir or None)
  if not builder.is_prepared():
    if not network.can_reach(*_CIFAR10_HOST):
      root = builder.data_path.parent.parent
      raise errors.NoNetwork(
        f"CIFAR-10 is not prepared in {builder.data_path} and cannot be downloaded: "
        f"{_CIFAR10_HOST[0]} is unreachable (no network?). Either prepare it on a machine with a "
        "network, python -c \"import tensorflow_datasets as tfds; tfds.builder('cifar10', "
        f"data_dir='{root}').download_and_prepare()\", and copy {root}/cifar10 to this machine "
        "(or pass --config.data_dir=WHERE_YOU_COPIED_IT), or train on image files with "
        "--config.dataset=imagefolder:PATH (PATH/train/<class>/*.jpg, PATH/test/<class>/*.jpg)."
      )
    builder.download_and_prepare()
  return builder


class ImageFolder:
  """`root/<split>/<class>/<image>` files, scanned once; images are decoded when batched."""

  def __init__(self, root: str, image_size: int):
    self._root, self._image_size = root, image_size
    self.class_names, self._examples = _scan_folder(root)

  def warn_if_shrunk(self, model_size: int, samples: int = 32) -> None:
    """Warns when the images are resized on the host below both their size and the model's.

    `source_image_size` is what the host resizes every image to before batching; the device then
    resizes that to `image_size`. Photos larger than the model input would silently lose detail
    to a small `source_image_size` (32 by default, CIFAR-10's size). Reads only the headers of
    `samples` files spread over the folder.
    """
    files = [path for examples in self._examples.values() for path, _ in examples]
    shorter = []
    for path in files[:: max(1, len(files) // samples)][:samples]:
      try:
        with Image.open(path) as image:
          shorter.append(min(image.size))
      except (OSError, ValueError):  # Named when it is decoded, with the fix.
        continue
    typical = int(np.median(shorter)) if shorter else 0
    if min(typical, model_size) > self._image_size:
      logging.warning(
        "The images of %s are about %d pixels on their shorter side (median of %d), but the host "
        "resizes each to %dx%d (config.source_image_size) before the model sees %dx%d: detail is "
        "lost. Set --config.source_image_size=%d.", self._root, typical, len(shorter),
        self._image_size, self._image_size, model_size, model_size, min(typical, model_size),
      )  # fmt: skip

  def split(self, spec: str) -> Split:
    """The files of a split string: TFDS's slicing over the folder's sorted, shuffled files."""
    import tensorflow_datasets as tfds  # noqa: PLC0415  (its split parser needs no TensorFlow)

    infos = {
      name: tfds.core.SplitInfo(name=name, shard_lengths=[len(examples)], num_bytes=0)
      for name, examples in self._examples.items()
    }
    try:
      instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(infos)
    except ValueError as error:
      raise errors.UserError(
        f"Cannot read split {spec!r} of the image folder {self._root}, which has the split "
        f"folders {sorted(self._examples)}: {error} Add {self._root}/<split>/<class>/ folders or "
        "change --config.train_split, --config.eval_split or --config.val_split."
      ) from error
    selected = [ex for i in instructions for ex in self._examples[i.splitname][i.from_ : i.to]]
    return Split(
      labels=np.array([label for _, label in selected], np.int32),
      image_shape=(self._image_size, self._image_size, 3),
      paths=np.array([path for path, _ in selected], dtype=object),
    )


def _scan_folder(root: str) -> tuple[tuple[str, ...], dict[str, list[tuple[str, int]]]]:
  """Lists `root/<split>/<class>/<image>` as (class names, {split: [(path, label)]}).

  Follows tfds.folder_dataset.ImageFolder, down to its order (sorted classes and files, then each
  split shuffled by `random.Random(split)`, so a slice such as 'train[90%:]' mixes the classes),
  but reads more image types (decode.IMAGE_SUFFIXES), and refuses splits whose class folders
  differ, and empty class folders.
  """
  root_dir = pathlib.Path(root).expanduser()
  if not root_dir.is_dir():
    raise errors.UserError(
      f"The image folder {root} does not exist: --config.dataset=imagefolder:PATH needs "
      "PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg."
    )
  classes = {
    split_dir.name: sorted(d.name for d in split_dir.iterdir() if _is_visible_dir(d))
    for split_dir in sorted(root_dir.iterdir())
    if _is_visible_dir(split_dir)
  }
  class_names = tuple(sorted(set().union(*classes.values())))
  if not class_names:
    raise errors.UserError(f"The image folder {root} has no <split>/<class>/ folders: add them.")
  for split, names in classes.items():
    if tuple(names) != class_names:
      raise errors.UserError(
        f"{root_dir / split} lacks the class folders {sorted(set(class_names) - set(names))} "
        "that other splits have: every split needs the same class folders."
      )
  examples = {}
  for split in classes:
    split_examples = []
    for label, name in enumerate(class_names):
      class_dir = root_dir / split / name
      files = sorted(str(p) for p in class_dir.iterdir() if decode.is_image_file_name(p))
      if not files:
        raise errors.UserError(
          f"The class folder {class_dir} holds no {'/'.join(decode.IMAGE_SUFFIXES)} images: add "
          "some, or remove this class from every split."
        )
      split_examples += [(path, label) for path in files]
    random.Random(split).shuffle(split_examples)
    examples[split] = split_examples
  return class_names, examples


def _is_visible_dir(path: pathlib.Path) -> bool:
  return path.is_dir() and not path.name.startswith(".")
