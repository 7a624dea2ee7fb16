"""Data sets -> numpy batches of uint8 images at their source size, and int32 labels.

Two sources: `cifar10` through TFDS, loaded into memory once (150 MB), and
`imagefolder:PATH`, a folder of `<split>/<class>/<image>` files decoded on demand (users' folders
can be large). The host only decodes and batches; resizing, flipping and normalizing happen on the
device (`jaxresnet/preprocess.py`).

Which examples make up each batch is computed in numpy from the seed and the global step, so any
step can be restarted exactly, and the global batch is the same for any number of processes; each
process loads only its slice of it.
"""

import collections
import dataclasses
import functools
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from jaxresnet import network

_IMAGEFOLDER = "imagefolder:"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # Those of tfds.folder_dataset.ImageFolder.
_CIFAR10_HOST = ("www.cs.toronto.edu", 443)  # Where TFDS downloads CIFAR-10 from.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the training loop needs to know about a data set before reading it."""

  class_names: tuple[str, ...]
  num_train: int  # Examples in config.train_split.
  num_eval: int  # Examples in config.eval_split.
  num_val: int  # Examples in config.val_split, 0 when none.
  image_shape: tuple[int, int, int]  # Source height, width, 3.

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class _Split:
  """The examples of one split string, by index: decoded in memory, or as files to decode."""

  labels: np.ndarray  # int32 [N].
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  images: np.ndarray | None = None  # uint8 [N, H, W, 3] (TFDS).
  paths: np.ndarray | None = None  # str [N] (image folders).


def get_info(config: ml_collections.ConfigDict) -> DatasetInfo:
  """Reads class names, split sizes and the source image shape (loading TFDS splits once)."""
  train = _load_split(config, config.train_split)
  return DatasetInfo(
    class_names=train.class_names,
    num_train=len(train.labels),
    num_eval=len(_load_split(config, config.eval_split).labels),
    num_val=len(_load_split(config, config.val_split).labels) if config.val_split else 0,
    image_shape=train.image_shape,
  )


def train_batches(
  config: ml_collections.ConfigDict, info: DatasetInfo, start_step: int = 0
) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches of this process, the first one for global step `start_step`.

  Global step s reads the examples `perm[k * B:(k + 1) * B]` of epoch e, where e, k =
  divmod(s, num_train // B), B is config.batch_size and perm is a permutation drawn from
  (config.seed, e); the incomplete last batch of each epoch is dropped. Process p takes the p-th
  contiguous slice of each global batch. Unlike `tfds.split_for_jax_process`, which gives each
  process its own subset of the data (so batches, and results, would depend on the process count),
  this gives every process count the same global batches, and restarting at a step costs nothing.

  Returns:
    Batches {'image': uint8 [B / P, H, W, 3], 'label': int32 [B / P]} for P processes.
  """
  split = _load_split(config, config.train_split)
  local = _process_slice(config, "batch_size")
  if info.num_train < config.batch_size:
    raise ValueError(
      f"config.batch_size = {config.batch_size} exceeds the {info.num_train} examples of "
      f"{config.train_split!r}: lower --config.batch_size."
    )
  indices = _train_indices(info.num_train, config.batch_size, config.seed, start_step, local)
  return _batches(split, indices, local.stop - local.start, config.prefetch_batches)


def eval_batches(config: ml_collections.ConfigDict, split: str) -> Iterator[dict[str, np.ndarray]]:
  """One pass over `split` in batches of config.eval_batch_size (global), in order.

  Every example is visited exactly once over all processes; the last global batch is padded
  (with copies of the first example) and `mask` is False on the padding.

  Returns:
    Batches {'image': uint8 [E / P, H, W, 3], 'label': int32 [E / P], 'mask': bool [E / P]}.
  """
  data = _load_split(config, split)
  local = _process_slice(config, "eval_batch_size")
  indices = _eval_indices(len(data.labels), config.eval_batch_size, local)
  return _batches(data, indices, local.stop - local.start, config.prefetch_batches, masked=True)


def _process_slice(config: ml_collections.ConfigDict, field: str) -> slice:
  """This process's contiguous part of each global batch of config.<field> examples."""
  batch_size, processes = config[field], jax.process_count()
  if batch_size % processes:
    raise ValueError(
      f"config.{field} = {batch_size} is not divisible by the {processes} processes: set "
      f"--config.{field} to a multiple of {processes}."
    )
  local = batch_size // processes
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def _train_indices(
  num_examples: int, batch_size: int, seed: int, start_step: int, local: slice
) -> Iterator[dict[str, np.ndarray]]:
  steps_per_epoch = num_examples // batch_size
  first_epoch, first_step = divmod(start_step, steps_per_epoch)
  for epoch in itertools.count(first_epoch):
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    for step in range(first_step if epoch == first_epoch else 0, steps_per_epoch):
      yield {"index": order[step * batch_size : (step + 1) * batch_size][local]}


def _eval_indices(
  num_examples: int, batch_size: int, local: slice
) -> Iterator[dict[str, np.ndarray]]:
  # Pads indices of the global batch before slicing it, where clu.deterministic_data.pad_dataset
  # would pad each process's own examples.
  for start in range(0, num_examples, batch_size):
    index = np.arange(start, start + batch_size)[local]
    mask = index < num_examples
    yield {"index": np.where(mask, index, 0), "mask": mask}


def _batches(
  split: _Split,
  indices: Iterator[dict[str, np.ndarray]],
  local_batch: int,
  prefetch: int,
  *,
  masked: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
  """Loads the examples at each batch of indices: tf.data decodes files in parallel, prefetched."""
  pending = collections.deque()  # Paths of the batches given to tf.data and not yet returned.

  def examples() -> Iterator[dict[str, np.ndarray]]:
    for batch in indices:
      index = batch.pop("index")
      batch["label"] = split.labels[index]
      if split.paths is None:
        batch["image"] = split.images[index]
      else:
        batch["path"] = split.paths[index]
        pending.append(batch["path"])
      yield batch

  spec = {"label": tf.TensorSpec([local_batch], tf.int32)}
  if split.paths is None:
    spec["image"] = tf.TensorSpec([local_batch, *split.image_shape], tf.uint8)
  else:
    spec["path"] = tf.TensorSpec([local_batch], tf.string)
  if masked:
    spec["mask"] = tf.TensorSpec([local_batch], tf.bool)
  dataset = tf.data.Dataset.from_generator(examples, output_signature=spec)
  if split.paths is not None:
    decode = functools.partial(_decode_example, size=split.image_shape[0])
    dataset = dataset.unbatch().map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(local_batch)
  iterator = dataset.prefetch(prefetch).as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as error:
      _raise_for_bad_file(itertools.chain.from_iterable(pending), split.image_shape[0], error)
    if pending:
      pending.popleft()
    yield batch


def _decode_example(example: dict[str, tf.Tensor], size: int) -> dict[str, tf.Tensor]:
  path = example.pop("path")
  return {**example, "image": _decode_image(tf.io.read_file(path), size)}


def _decode_image(contents: tf.Tensor, size: int) -> tf.Tensor:
  """Decodes to RGB uint8 [size, size, 3] with exactly PIL's pixels (as torchvision reads them).

  `decode_jpeg`'s default (fast) DCT is off from PIL by up to 5 levels; INTEGER_ACCURATE is what
  PIL uses. Gray and RGBA become RGB as with PIL's `convert("RGB")`. Images of another size are
  resized by PIL itself (bilinear), so those pixels match too.
  """
  image = tf.cond(
    tf.io.is_jpeg(contents),
    lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
    lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
  )
  image = tf.cond(
    tf.reduce_all(tf.shape(image)[:2] == size),
    lambda: image,
    lambda: tf.numpy_function(_pil_resize, [image, size], tf.uint8, stateful=False),
  )
  return tf.ensure_shape(image, [size, size, 3])


def _pil_resize(image: np.ndarray, size: np.ndarray) -> np.ndarray:
  size = int(size)
  return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _raise_for_bad_file(paths: Iterator[str], size: int, error: tf.errors.OpError) -> NoReturn:
  """Raises an error naming the file that broke a batch (tf.data's own error names none)."""
  for path in paths:
    try:
      _decode_image(tf.io.read_file(path), size)
    except tf.errors.OpError as bad_file:
      raise ValueError(
        f"Cannot read the image {path}: {bad_file.message}. Replace or delete this file."
      ) from bad_file
  raise error


def _load_split(config: ml_collections.ConfigDict, split: str) -> _Split:
  if config.dataset == "cifar10":
    data = _load_tfds_split(config.data_dir, split)
  elif config.dataset.startswith(_IMAGEFOLDER):
    root = config.dataset.removeprefix(_IMAGEFOLDER)
    data = _load_folder_split(root, split, config.source_image_size)
  else:
    raise ValueError(
      f"config.dataset = {config.dataset!r} is unknown: use 'cifar10' or 'imagefolder:PATH' "
      "(PATH/train/<class>/*.jpg, PATH/test/<class>/*.jpg)."
    )
  if not len(data.labels):
    raise ValueError(f"Split {split!r} of {config.dataset} is empty: choose another split.")
  return data


@functools.lru_cache(maxsize=4)
def _load_tfds_split(data_dir: str, split: str) -> _Split:
  """Reads a CIFAR-10 split into memory, once: evaluation asks for its split every epoch."""
  builder = _prepared_cifar10(data_dir)
  # batch_size=-1 would do it in one go, but aborts under tfds.testing.mock_data.
  batches = list(
    builder.as_dataset(split=split, shuffle_files=False).batch(4096).as_numpy_iterator()
  )
  images = np.concatenate([batch["image"] for batch in batches])
  return _Split(
    labels=np.concatenate([batch["label"] for batch in batches]).astype(np.int32),
    class_names=tuple(builder.info.features["label"].names),
    image_shape=images.shape[1:],
    images=images,
  )


def _prepared_cifar10(data_dir: str) -> tfds.core.DatasetBuilder:
  """Returns the CIFAR-10 builder, downloaded and prepared if it was not; offline, fails fast.

  TFDS retries a failing download for minutes (about 205 s here); a quick probe of the download
  host turns that into an immediate error that says what to do.
  """
  builder = tfds.builder("cifar10", data_dir=data_dir or None)
  if not builder.is_prepared():
    if not network.can_reach(*_CIFAR10_HOST):
      root = builder.data_path.parent.parent
      raise FileNotFoundError(
        f"CIFAR-10 is not prepared in {builder.data_path} and cannot be downloaded: "
        f"{_CIFAR10_HOST[0]} is unreachable (no network?). Either prepare it on a machine with a "
        "network, python -c \"import tensorflow_datasets as tfds; tfds.builder('cifar10', "
        f"data_dir='{root}').download_and_prepare()\", and copy {root}/cifar10 to this machine "
        "(or pass --config.data_dir=WHERE_YOU_COPIED_IT), or train on image files with "
        "--config.dataset=imagefolder:PATH (PATH/train/<class>/*.jpg, PATH/test/<class>/*.jpg)."
      )
    builder.download_and_prepare()
  return builder


def _load_folder_split(root: str, split: str, image_size: int) -> _Split:
  """Lists the files of a split string (e.g. 'train[:90%]', TFDS's syntax) of an image folder."""
  class_names, examples = _scan_folder(root)
  infos = {
    name: tfds.core.SplitInfo(name=name, shard_lengths=[len(split_examples)], num_bytes=0)
    for name, split_examples in examples.items()
  }
  try:
    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
  except ValueError as error:
    raise ValueError(
      f"Cannot read split {split!r} of the image folder {root}, which has the split folders "
      f"{sorted(examples)}: {error} Add {root}/<split>/<class>/ folders or change "
      "--config.train_split, --config.eval_split or --config.val_split."
    ) from error
  selected = [ex for i in instructions for ex in examples[i.splitname][i.from_ : i.to]]
  return _Split(
    labels=np.array([label for _, label in selected], np.int32),
    class_names=class_names,
    image_shape=(image_size, image_size, 3),
    paths=np.array([path for path, _ in selected], dtype=object),
  )


def _scan_folder(root: str) -> tuple[tuple[str, ...], dict[str, list[tuple[str, int]]]]:
  """Lists `root/<split>/<class>/<image>` as (class names, {split: [(path, label)]}).

  Follows tfds.folder_dataset.ImageFolder, down to its order (sorted classes and files, then each
  split shuffled by `random.Random(split)`, so a slice such as 'train[90%:]' mixes the classes),
  but refuses splits whose class folders differ, and empty class folders.
  """
  root_dir = Path(root).expanduser()
  if not root_dir.is_dir():
    raise FileNotFoundError(
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
    raise ValueError(f"The image folder {root} has no <split>/<class>/ folders: add them.")
  for split, names in classes.items():
    if tuple(names) != class_names:
      raise ValueError(
        f"{root_dir / split} lacks the class folders {sorted(set(class_names) - set(names))} "
        "that other splits have: every split needs the same class folders."
      )
  examples = {}
  for split in classes:
    split_examples = []
    for label, name in enumerate(class_names):
      class_dir = root_dir / split / name
      files = sorted(str(p) for p in class_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
      if not files:
        raise ValueError(
          f"The class folder {class_dir} holds no {'/'.join(_IMAGE_SUFFIXES)} images: add some, "
          "or remove this class from every split."
        )
      split_examples += [(path, label) for path in files]
    random.Random(split).shuffle(split_examples)
    examples[split] = split_examples
  return class_names, examples


def _is_visible_dir(path: Path) -> bool:
  return path.is_dir() and not path.name.startswith(".")
