"""The one table between torchvision state-dict keys and jaxresnet variable paths.

The Flax modules carry torchvision's names, so a path maps to a key word for word; only the
leaf names and the array layouts differ, and both are listed here, once, for both directions.
"""

from collections.abc import Iterator

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


def guess_arch(keys: set[str]) -> str | None:
  """The architecture whose keys a state dict holds (ignoring the head), if any."""
  body = {k for k in keys if not k.startswith("fc.") and not k.endswith(COUNTER)}
  for arch in models.MODELS:
    expected = {torch_key(p) for p in variable_shapes(arch, 1000)}
    if body == {k for k in expected if not k.startswith("fc.")}:
      return arch
  return None
