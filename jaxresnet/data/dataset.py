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

from jaxresnet import errors
from jaxresnet.data import batching, sources


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a run needs to know about its data before reading a batch."""

  class_names: tuple[str, ...]
  num_examples: Mapping[str, int]  # Per split string.
  class_counts: Mapping[str, tuple[int, ...]]  # Per split string: examples of each class.
  image_shape: tuple[int, int, int]  # Source height, width, 3.

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


class Dataset:
  """Serves the batches of the splits it was built with; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, splits: Mapping[str, sources.Split],
               class_names: tuple[str, ...]):  # fmt: skip
    self._config, self._splits = config, dict(splits)
    first = next(iter(self._splits.values()))
    self.info = DatasetInfo(
      class_names=class_names,
      num_examples={spec: len(split.labels) for spec, split in self._splits.items()},
      class_counts={
        spec: tuple(np.bincount(split.labels, minlength=len(class_names)).tolist())
        for spec, split in self._splits.items()
      },
      image_shape=first.image_shape,
    )

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
    return batching.load_batches(split, indices, config.prefetch_batches)

  def eval_batches(self, spec: str) -> Iterator[batching.Batch]:
    """One pass over split `spec` in global batches of config.eval_batch_size, in order.

    Every example is visited exactly once over all processes; the last global batch is padded
    and `mask` is False on the padding: {'image', 'label', 'mask': bool [E / P]}.
    """
    split = self._split(spec)
    local = batching.process_slice(self._config.eval_batch_size, "eval_batch_size")
    indices = batching.eval_indices(len(split.labels), self._config.eval_batch_size, local)
    return batching.load_batches(split, indices, self._config.prefetch_batches)

  def _split(self, spec: str) -> sources.Split:
    if spec not in self._splits:
      raise KeyError(f"Split {spec!r} was not loaded; this data set has {sorted(self._splits)}.")
    return self._splits[spec]


def create_dataset(config: ml_collections.ConfigDict, splits: Sequence[str]) -> Dataset:
  """Builds the source `config.dataset` names once and lists or loads each of `splits` once.

  Args:
    config: reads dataset, data_dir, source_image_size, batch sizes, seed, prefetch_batches.
    splits: split strings in TFDS's syntax; empty strings (an unset val_split) are skipped.
  """
  source = sources.create_source(config)
  loaded = {}
  for spec in dict.fromkeys(s for s in splits if s):
    loaded[spec] = source.split(spec)
    if not len(loaded[spec].labels):
      raise errors.UserError(f"Split {spec!r} of {config.dataset} is empty: choose another split.")
  return Dataset(config, loaded, source.class_names)
