"""Which examples make up each batch, and loading them ahead of the training loop.

Batches are computed in numpy from the seed and the global step, so any step can be restarted
exactly, and the global batch is the same for any number of processes; each process loads only
its slice of it.
"""

import collections
import concurrent.futures
import itertools
import os
from collections.abc import Callable, Iterator

import jax
import numpy as np

from jaxresnet import errors
from jaxresnet.data import sources

Batch = dict[str, np.ndarray]


def process_slice(batch_size: int, field: str) -> slice:
  """This process's contiguous part of each global batch of `batch_size` (config.<field>)."""
  processes = jax.process_count()
  if batch_size % processes:
    raise errors.UserError(
      f"config.{field} = {batch_size} is not divisible by the {processes} processes: set "
      f"--config.{field} to a multiple of {processes}."
    )
  local = batch_size // processes
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def train_indices(
  num_examples: int, batch_size: int, seed: int, start_step: int, local: slice
) -> Iterator[Batch]:
  """Endless {"index", "draw"} of this process's examples, the first for global step `start_step`.

  Global step s reads the examples `perm[k * B:(k + 1) * B]` of epoch e, where e, k =
  divmod(s, num_examples // B) and perm is a permutation drawn from (seed, e); the incomplete last
  batch of each epoch is dropped. Process p takes the p-th contiguous slice of each global batch.
  Unlike `tfds.split_for_jax_process`, which gives each process its own subset of the data (so
  batches, and results, would depend on the process count), this gives every process count the
  same global batches, and restarting at a step costs nothing. "draw" is [(step, position in the
  global batch)] per example, from which host transforms draw their random crops.
  """
  steps_per_epoch = num_examples // batch_size
  first_epoch, first_step = divmod(start_step, steps_per_epoch)
  for epoch in itertools.count(first_epoch):
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    for step in range(first_step if epoch == first_epoch else 0, steps_per_epoch):
      global_step = epoch * steps_per_epoch + step
      positions = np.arange(batch_size)[local]
      draw = np.stack([np.full_like(positions, global_step), positions], axis=1)
      yield {"index": order[step * batch_size : (step + 1) * batch_size][local], "draw": draw}


def eval_indices(num_examples: int, batch_size: int, local: slice) -> Iterator[Batch]:
  """One pass in order: {"index", "mask"}, the last global batch padded with example 0.

  Pads the indices of the global batch before slicing it, where clu.deterministic_data.pad_dataset
  would pad each process's own examples: so every example is counted once over all processes.
  """
  for start in range(0, num_examples, batch_size):
    index = np.arange(start, start + batch_size)[local]
    mask = index < num_examples
    yield {"index": np.where(mask, index, 0), "mask": mask}


# (example index, (global step, position) in training or None) -> uint8 [H, W, 3].
Loader = Callable[[int, tuple[int, int] | None], np.ndarray]


def load_batches(
  split: sources.Split, indices: Iterator[Batch], prefetch: int, load: Loader | None
) -> Iterator[Batch]:
  """The examples at each batch of indices: {"image", "label"} plus "mask" if the indices have it.

  `load=None` indexes an in-memory split as it is. Otherwise `load` makes each example's image (a
  file decoded, a crop drawn) in a thread pool (PIL releases the GIL while it decodes and
  resizes), `prefetch` batches ahead of the consumer, so that this overlaps the device's step and
  at most `prefetch + 1` batches are held; a bad file fails naming itself, at the batch that
  holds it.
  """
  if load is None:
    for batch in indices:
      index = batch.pop("index")
      batch.pop("draw", None)
      yield {"image": split.images[index], "label": split.labels[index], **batch}
    return
  pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count())
  pending = collections.deque()  # (images being made, the rest of the batch), oldest first.

  def finished() -> Batch:
    images, rest = pending.popleft()
    return {"image": np.stack([image.result() for image in images]), **rest}

  try:
    for batch in indices:
      index, draws = batch.pop("index"), batch.pop("draw", None)
      draws = [None] * len(index) if draws is None else [tuple(map(int, d)) for d in draws]
      images = [pool.submit(load, int(i), d) for i, d in zip(index, draws, strict=True)]
      pending.append((images, {"label": split.labels[index], **batch}))
      if len(pending) > prefetch:
        yield finished()
    while pending:
      yield finished()
  finally:  # Also when the consumer stops early: drop what is still queued.
    pool.shutdown(wait=True, cancel_futures=True)
