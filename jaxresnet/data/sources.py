"""Where examples come from, as `Split`s; and image folders, scanned once.

A source (an `ImageFolder` here; TFDS's in `tfds_sources.py`) is built once per run and turns
split strings in TFDS's syntax (`train`, `train[:90%]`, `train[10:20]+test`) into `Split`s.
A folder is either `ROOT/<split>/<class>/<image>` or `ROOT/<class>/<image>`; the latter is one
pool, split `train`, to slice by percentages (`train[:80%]`, `train[80%:]`), as TFDS's data
sets with only a train split are. Folders need no TensorFlow (only TFDS's split parser).
"""

import dataclasses
import pathlib
import random
from typing import Any, Protocol

import numpy as np
from absl import logging

from jaxresnet import errors
from jaxresnet.data import decode

IMAGEFOLDER = "imagefolder:"
POOL = "train"  # The one split of a ROOT/<class>/ folder, as TFDS data sets with one split.


@dataclasses.dataclass(frozen=True)
class Split:
  """The examples of one split string, by index: decoded in memory, files, or encoded records."""

  labels: np.ndarray  # int32 [N].
  images: np.ndarray | None = None  # uint8 [N, H, W, 3] (TFDS CIFAR-10).
  paths: np.ndarray | None = None  # str [N] (image folders).
  records: Any = None  # With .rgb(index) -> PIL image (tfds:NAME, `tfds_sources.EncodedImages`).


class Source(Protocol):
  class_names: tuple[str, ...]

  def split(self, spec: str) -> Split: ...


class ImageFolder:
  """`ROOT/<split>/<class>/<image>` or `ROOT/<class>/<image>` files, scanned once; images are
  decoded when batched."""

  def __init__(self, root: str):
    self._root = root
    self.class_names, self._examples = _scan_folder(root)

  def warn_about_sizes(self, source_size: int, model_size: int, samples: int = 32) -> None:
    """Warns when the images lose detail on the host, or are mostly blown up over 4x.

    An explicit `source_size` (config.source_image_size) squashes every image to that square on
    the host; photos larger than the model input would silently lose detail to a small one.
    Reads only the headers of `samples` files spread over the folder.
    """
    files = [path for examples in self._examples.values() for path, _ in examples]
    shorter = [min(size) for size in decode.sampled_sizes(files, samples)]
    if not shorter:
      return
    typical = int(np.median(shorter))
    if source_size and min(typical, model_size) > source_size:
      logging.warning(
        "The images of %s are about %d pixels on their shorter side (median of %d), but the host "
        "resizes each to %dx%d (config.source_image_size) before the model sees %dx%d: detail is "
        "lost. Set --config.source_image_size=0 (each image's own size) or %d.", self._root,
        typical, len(shorter), source_size, source_size, model_size, model_size,
        min(typical, model_size),
      )  # fmt: skip
    if 4 * typical < model_size:
      logging.warning(
        "The images of %s are about %d pixels on their shorter side (median of %d): the model's "
        "%dx%d input blows them up over 4x. A smaller --config.image_size trains faster on as "
        "much detail.", self._root, typical, len(shorter), model_size, model_size,
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
    except (ValueError, NotImplementedError) as error:  # TFDS raises both for bad specs.
      if list(self._examples) == [POOL]:
        fix = (
          f"Its ROOT/<class>/ images form one pool, {POOL!r}: split it by percentages, e.g. "
          f"--config.train_split='{POOL}[:80%]' --config.eval_split='{POOL}[80%:]'."
        )
      else:
        fix = (
          f"Add {self._root}/<split>/<class>/ folders or change --config.train_split, "
          "--config.eval_split or --config.val_split."
        )
      raise errors.UserError(
        f"Cannot read split {spec!r} of the image folder {self._root}, which has the splits "
        f"{sorted(self._examples)}: {error} {fix}"
      ) from error
    selected = [ex for i in instructions for ex in self._examples[i.splitname][i.from_ : i.to]]
    return Split(
      labels=np.array([label for _, label in selected], np.int32),
      paths=np.array([path for path, _ in selected], dtype=object),
    )


Examples = list[tuple[str, int]]  # (path, label)


def _scan_folder(root: str) -> tuple[tuple[str, ...], dict[str, Examples]]:
  """Lists an image folder as (class names, {split: [(path, label)]}).

  `ROOT/<split>/<class>/<image>` follows tfds.folder_dataset.ImageFolder, down to its order
  (sorted classes and files, then each split shuffled by `random.Random(split)`, so a slice such
  as 'train[90%:]' mixes the classes), but reads more image types (decode.IMAGE_SUFFIXES), and
  refuses splits whose class folders differ, and empty class folders. `ROOT/<class>/<image>` is
  one split, POOL, in a stratified order (`_stratified`).
  """
  root_dir = pathlib.Path(root).expanduser()
  if not root_dir.is_dir():
    raise errors.UserError(
      f"The image folder {root} does not exist: --config.dataset=imagefolder:PATH needs "
      "PATH/<split>/<class>/*.jpg (e.g. PATH/train/, PATH/test/) or PATH/<class>/*.jpg."
    )
  subdirs = sorted(d for d in root_dir.iterdir() if _is_visible_dir(d))
  if subdirs and any(decode.is_image_file_name(p) for p in subdirs[0].iterdir()):
    class_names = tuple(d.name for d in subdirs)
    return class_names, {POOL: _stratified(_class_files(root_dir, class_names), class_names)}
  classes = {d.name: sorted(c.name for c in d.iterdir() if _is_visible_dir(c)) for d in subdirs}
  class_names = tuple(sorted(set().union(*classes.values())))
  if not class_names:
    raise errors.UserError(
      f"The image folder {root} has neither <split>/<class>/ nor <class>/ folders of images: add "
      "them."
    )
  for split, names in classes.items():
    if tuple(names) != class_names:
      raise errors.UserError(
        f"{root_dir / split} lacks the class folders {sorted(set(class_names) - set(names))} "
        "that other splits have: every split needs the same class folders."
      )
  examples = {}
  for split in classes:
    examples[split] = [ex for files in _class_files(root_dir / split, class_names) for ex in files]
    random.Random(split).shuffle(examples[split])
  return class_names, examples


def _class_files(directory: pathlib.Path, class_names: tuple[str, ...]) -> list[Examples]:
  """Per class, the sorted [(path, label)] of directory/<class>/; refuses an empty class."""
  per_class = []
  for label, name in enumerate(class_names):
    class_dir = directory / name
    entries = list(class_dir.iterdir())
    files = sorted(str(p) for p in entries if decode.is_image_file_name(p))
    nested = sorted(p.name for p in entries if _is_visible_dir(p))
    if not files and nested:
      raise errors.UserError(
        f"The class folder {class_dir} holds folders ({', '.join(nested[:5])}), not images: if "
        f"{directory} is the image folder you meant, use --config.dataset=imagefolder:{directory};"
        f" else move the images up into {class_dir}."
      )
    if not files:
      raise errors.UserError(
        f"The class folder {class_dir} holds no {'/'.join(decode.IMAGE_SUFFIXES)} images: add "
        "some, or remove this class from every split."
      )
    per_class.append([(path, label) for path in files])
  return per_class


def _stratified(per_class: list[Examples], class_names: tuple[str, ...]) -> Examples:
  """One pool in which every slice holds each class in its share, to within one image.

  Each class is shuffled (seeded by its name, so the order is fixed from run to run), its k-th of
  n images placed at (k + 0.5) / n, and the pool sorted by place: 'train[:80%]' then takes 80% of
  every class, the rare ones of an imbalanced folder included, and 'train[80%:]' the rest.
  """
  placed = []
  for label, (files, name) in enumerate(zip(per_class, class_names, strict=True)):
    files = list(files)
    random.Random(name).shuffle(files)
    placed += [((k + 0.5) / len(files), label, ex) for k, ex in enumerate(files)]
  return [ex for _, _, ex in sorted(placed, key=lambda p: p[:2])]


def _is_visible_dir(path: pathlib.Path) -> bool:
  return path.is_dir() and not path.name.startswith(".")
