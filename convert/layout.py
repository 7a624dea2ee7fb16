"""The one table between torchvision state-dict keys and jaxresnet variable paths.

The Flax modules carry torchvision's names, so a path maps to a key word for word; only the
leaf names and the array layouts differ, and both are listed here, once, for both directions.
"""

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np

from jaxresnet import models

Path = tuple[str, ...]  # ("params", "layer1", "0", "conv1", "kernel")

# (collection, Flax leaf) -> torch leaf.
LEAF_NAMES = {
  ("params", "kernel"): "weight",
  ("params", "scale"): "weight",
  ("params", "bias"): "bias",
  ("batch_stats", "mean"): "running_mean",
  ("batch_stats", "var"): "running_var",
}
# torch keeps a `num_batches_tracked` counter per BatchNorm; Flax has no such variable.
COUNTER = "num_batches_tracked"


def torch_key(path: Path) -> str:
  """("params", "layer1", "0", "conv1", "kernel") -> "layer1.0.conv1.weight"."""
  collection, *modules, leaf = path
  return ".".join([*modules, LEAF_NAMES[(collection, leaf)]])


def to_flax(path: Path, array: np.ndarray) -> np.ndarray:
  """torch layout -> Flax layout: conv OIHW -> HWIO, linear (out, in) -> (in, out).

  Always a copy: a view would change with the torch tensor it came from.
  """
  if path[-1] == "kernel":
    array = np.transpose(array, (2, 3, 1, 0) if array.ndim == 4 else (1, 0))
  return np.array(array)


def to_torch(path: Path, array: np.ndarray) -> np.ndarray:
  """The inverse of `to_flax`."""
  if path[-1] == "kernel":
    return np.transpose(array, (3, 2, 0, 1) if array.ndim == 4 else (1, 0))
  return array


def torch_shape(path: Path, shape: Sequence[int]) -> tuple[int, ...]:
  """The shape `to_torch` gives a Flax variable of `shape` (nothing is allocated)."""
  return to_torch(path, np.broadcast_to(np.empty((), np.uint8), shape)).shape


def variable_shapes(arch: str, num_classes: int) -> dict[Path, tuple[int, ...]]:
  """Every variable of the model, in Flax layout, without computing anything."""
  model = models.create_model(arch, num_classes)
  abstract = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0)))
  return {path: leaf.shape for path, leaf in flatten(abstract)}


def flatten(tree: dict) -> Iterator[tuple[Path, object]]:
  """Yields (path, leaf) over a nested dict of variables."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    yield tuple(entry.key for entry in path), leaf


def unflatten(leaves: dict[Path, object]) -> dict:
  """The inverse of `flatten`."""
  tree: dict = {}
  for path, leaf in leaves.items():
    node = tree
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = leaf
  return tree


@functools.cache
def _body_shapes(arch: str) -> dict[str, tuple[int, ...]]:
  """torch key -> torch shape of every variable but the head's; traced once per arch."""
  shapes = variable_shapes(arch, 1000)
  return {torch_key(p): torch_shape(p, s) for p, s in shapes.items() if p[1] != "fc"}


def guess_arch(shapes: Mapping[str, Sequence[int]]) -> str | None:
  """The architecture a state dict's keys and shapes (torch key -> shape) are, head aside.

  Shapes, not only keys: resnet50, resnext50_32x4d and wide_resnet50_2 have the same keys.
  """
  body = {
    k: tuple(s) for k, s in shapes.items() if not k.startswith("fc.") and not k.endswith(COUNTER)
  }
  blocks = _blocks_per_stage(body)
  candidates = [a for a in models.MODELS if models.MODELS[a].keywords["stage_sizes"] == blocks]
  return next((arch for arch in candidates if _body_shapes(arch) == body), None)


def _blocks_per_stage(keys: Iterable[str]) -> tuple[int, ...]:
  """The number of blocks of layer1..4 that torch keys such as 'layer3.5.conv1.weight' name: a
  cheap filter before comparing shapes, each arch's of which takes a trace (~0.6 s)."""
  counts = [0, 0, 0, 0]
  for key in keys:
    stage, _, rest = key.partition(".")
    if stage in ("layer1", "layer2", "layer3", "layer4") and rest.split(".")[0].isdigit():
      i = int(stage[-1]) - 1
      counts[i] = max(counts[i], int(rest.split(".")[0]) + 1)
  return tuple(counts)
