"""The data set of a run, built once from its config: every split listed or loaded once.

dataset = create_dataset(config, [config.train_split, config.eval_split])
dataset.info.class_names, dataset.info.num_examples[config.train_split]
for batch in dataset.train_batches(start_step): ...
for batch in dataset.eval_batches(config.eval_split): ...
"""

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import ml_collections
import numpy as np
from PIL import Image

from jaxresnet import errors
from jaxresnet.data import batching, cache, decode, sources, tfds_sources, transforms


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a run needs to know about its data before reading a batch."""

  class_names: tuple[str, ...]
  num_examples: Mapping[str, int]  # Per split string.
  class_counts: Mapping[str, tuple[int, ...]]  # Per split string: examples of each class.

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


class Dataset:
  """Serves the batches of the splits it was built with; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, splits: Mapping[str, sources.Split],
               class_names: tuple[str, ...], transform: transforms.HostTransform):  # fmt: skip
    self._config, self._splits, self._transform = config, dict(splits), transform
    self.info = DatasetInfo(
      class_names=class_names,
      num_examples={spec: len(split.labels) for spec, split in self._splits.items()},
      class_counts={
        spec: tuple(np.bincount(split.labels, minlength=len(class_names)).tolist())
        for spec, split in self._splits.items()
      },
    )

  def prepared(self, eval_resize: int) -> "Dataset":
    """The same splits, evaluated at `eval_resize` (the shorter side before the centre crop,
    once the starting weights have had their say), and, with config.cache_dir, each image
    folder split decoded once into its cache (`cache.py`), which its batches then read."""
    transform = dataclasses.replace(self._transform, resize=eval_resize)
    splits = self._splits
    if self._config.cache_dir:
      if self._config.source_image_size:
        raise errors.UserError(
          f"config.cache_dir works with each image's own size only: set "
          f"--config.source_image_size=0 (it is {self._config.source_image_size}), or "
          "--config.cache_dir='' (no cache)."
        )
      splits = {
        spec: split if split.paths is None else dataclasses.replace(
          split, records=cache.cached_images(split.paths, transform, self._config.cache_dir))
        for spec, split in splits.items()
      }  # fmt: skip
    return Dataset(self._config, splits, self.info.class_names, transform)

  def train_batches(self, start_step: int = 0) -> Iterator[batching.Batch]:
    """Endless training batches of config.train_split for this process, from global `start_step`.

    See `batching.train_indices` for the order. Returns batches {'image': uint8
    [B / P, H, W, 3], 'label': int32 [B / P]} for a global batch B over P processes.
    """
    config = self._config
    split = self._split(config.train_split)
    local = batching.process_slice(config.batch_size, "batch_size")
    if len(split.labels) < config.batch_size:
      raise errors.UserError(
        f"config.batch_size = {config.batch_size} exceeds the {len(split.labels)} examples of "
        f"{config.train_split!r}: lower --config.batch_size."
      )
    indices = batching.train_indices(
      len(split.labels), config.batch_size, config.seed, start_step, local
    )
    return batching.load_batches(split, indices, config.prefetch_batches, self._loader(split, True))

  def eval_batches(self, spec: str) -> Iterator[batching.Batch]:
    """One pass over split `spec` in global batches of config.eval_batch_size, in order.

    Every example is visited exactly once over all processes; the last global batch is padded
    and `mask` is False on the padding: {'image', 'label', 'mask': bool [E / P]}.
    """
    split = self._split(spec)
    local = batching.process_slice(self._config.eval_batch_size, "eval_batch_size")
    indices = batching.eval_indices(len(split.labels), self._config.eval_batch_size, local)
    return batching.load_batches(
      split, indices, self._config.prefetch_batches, self._loader(split, False)
    )

  def _loader(self, split: sources.Split, train: bool) -> batching.Loader | None:
    """How each example becomes a batch's image: see `transforms.HostTransform`."""
    transform = self._transform
    if split.records is not None:
      return lambda i, draw: transform(split.records.rgb(i), draw)
    if split.paths is not None:
      return lambda i, draw: transform(decode.read_rgb(split.paths[i]), draw)
    if transform.ships_as_is(split.images.shape[1:], train):
      return None
    return lambda i, draw: transform(Image.fromarray(split.images[i]), draw)

  def _split(self, spec: str) -> sources.Split:
    if spec not in self._splits:
      raise KeyError(f"Split {spec!r} was not loaded; this data set has {sorted(self._splits)}.")
    return self._splits[spec]


def create_source(config: ml_collections.ConfigDict) -> sources.Source:
  """The source `config.dataset` names: "cifar10", "tfds:NAME" or "imagefolder:PATH"."""
  if config.dataset == "cifar10":
    return tfds_sources.TfdsCifar10(config.data_dir)
  if config.dataset.startswith(tfds_sources.TFDS):
    name = config.dataset.removeprefix(tfds_sources.TFDS)
    return tfds_sources.TfdsSource(name, config.data_dir, config.label_key)
  if config.dataset.startswith(sources.IMAGEFOLDER):
    folder = sources.ImageFolder(config.dataset.removeprefix(sources.IMAGEFOLDER))
    folder.warn_about_sizes(config.source_image_size, config.image_size)
    return folder
  raise errors.UserError(
    f"config.dataset = {config.dataset!r} is unknown: use 'cifar10', 'tfds:NAME' (any TFDS "
    "image-classification data set, e.g. tfds:cifar100) or 'imagefolder:PATH' "
    "(PATH/train/<class>/*.jpg, PATH/test/<class>/*.jpg)."
  )


def create_dataset(config: ml_collections.ConfigDict, splits: Sequence[str]) -> Dataset:
  """Builds the source `config.dataset` names once and lists or loads each of `splits` once.

  Args:
    config: reads dataset, data_dir, the transforms' fields (`transforms.from_config`), batch
      sizes, seed, prefetch_batches.
    splits: split strings in TFDS's syntax; empty strings (an unset val_split) are skipped.
  """
  source = create_source(config)
  loaded = {}
  for spec in dict.fromkeys(s for s in splits if s):
    loaded[spec] = source.split(spec)
    if not len(loaded[spec].labels):
      raise errors.UserError(f"Split {spec!r} of {config.dataset} is empty: choose another split.")
  return Dataset(config, loaded, source.class_names, transforms.from_config(config))
