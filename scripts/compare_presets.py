"""The experiments of `scripts/compare_torch.py`, as data: one `Preset` per name.

A preset says where the source weights come from, which CIFAR-10 classes and how many images
each arm reads, the recipes and the seeds. Every recipe is a paper optimizer by name: `sgd` and
`adam` are `configs/sgd.py` and `configs/adam.py` in jaxresnet and `PAPER_OPTIMIZERS` in
`scripts/torch_reference.py`, so neither side is tuned here.
"""

import dataclasses
import typing

from jaxresnet import errors
from jaxresnet.data import cifar10_jpeg


@dataclasses.dataclass(frozen=True)
class Recipe:
  name: str
  optimizer: str  # "sgd" or "adam": the paper's hyperparameters in each framework.
  pretrained: bool = True  # False: both frameworks train from scratch (the source unused).
  epochs: int = 0  # 0: the preset's; a recipe's own when its pilot asked for more.
  seeds: int = 0  # 0: the preset's.


SGD, ADAM = Recipe("sgd", "sgd"), Recipe("adam", "adam")
SCRATCH_SGD = Recipe("scratch_sgd", "sgd", pretrained=False)
SOURCE_CLASSES = cifar10_jpeg.CLASSES[:5]  # airplane, automobile, bird, cat, deer.
TARGET_CLASSES = cifar10_jpeg.CLASSES[5:]  # dog, frog, horse, ship, truck: new to the source.


@dataclasses.dataclass(frozen=True)
class Preset:
  """One experiment. Sizes are images per class; the JPEGs are 32x32, resized to image_size."""

  name: str
  # The source weights: "" trains a resnet18 from scratch here (PyTorch, on source_classes);
  # a torchvision weights name (e.g. IMAGENET1K_V1) or a torch.save'd state-dict path.
  source: str
  classes: tuple[str, ...]  # The fine-tuning classes.
  train_per_class: int
  test_per_class: int
  image_size: int
  epochs: int
  batch_size: int
  seeds: int
  recipes: tuple[Recipe, ...]
  first_seed: int = 0  # Seeds first_seed, first_seed + 1, ...: more seeds later, to merge.
  eval_batch_size: int = 500
  torch_workers: int = 2  # DataLoader workers.
  torch_threads: int = 0  # torch.set_num_threads; 0: torch's default.
  source_classes: tuple[str, ...] = SOURCE_CLASSES
  source_train_per_class: int = 5000
  source_test_per_class: int = 1000
  source_epochs: int = 5
  source_optimizer: str = "adam"  # With source_lr; Adam learns fastest from scratch.
  source_lr: float = 0.001

  def epochs_of(self, recipe: Recipe) -> int:
    return recipe.epochs or self.epochs

  def seeds_of(self, recipe: Recipe) -> range:
    return range(self.first_seed, self.first_seed + (recipe.seeds or self.seeds))


PRESETS = {
  # 2 CPU cores (about 300 train img/s at 32x32 in both frameworks): the source 5-10 minutes,
  # trained once; the 68 fine-tuning runs 63 minutes (AMD EPYC). 200 images per class: fine-
  # tuning then beats scratch by ~9 points (4 at 800 per class, the first version of this
  # preset), and a run takes 30-75 s. SGD varies by ~1 point from seed to seed: 8 seeds. Adam at
  # lr 0.01 is still jumping at epoch 10 (final std 3.6 over the 4-seed pilot): 18 seeds, as many
  # as the hour holds, which cannot bound a difference within ±2 at that spread; its equivalence
  # at 800 per class, 29 seeds, is docs/compare_torch_cpu800.md.
  "cpu": Preset(
    name="cpu", source="", classes=TARGET_CLASSES, train_per_class=200, test_per_class=500,
    image_size=32, epochs=5, batch_size=64, seeds=8,
    recipes=(SGD, dataclasses.replace(ADAM, epochs=10, seeds=18), SCRATCH_SGD), torch_threads=2,
  ),
  # One H200, estimated from its measured step rate at 224 (not yet run end to end): start-up
  # and compilation dominate the 18 runs; about 5 minutes.
  "gpu": Preset(
    name="gpu", source="", classes=TARGET_CLASSES, train_per_class=1000, test_per_class=500,
    image_size=224, epochs=3, batch_size=128, seeds=3, recipes=(SGD, ADAM, SCRATCH_SGD),
    torch_workers=8, source_epochs=3,
  ),
  # The paper: ImageNet weights, all of CIFAR-10 at 224; needs a network once, and a GPU.
  "paper": Preset(
    name="paper", source="IMAGENET1K_V1", classes=cifar10_jpeg.CLASSES, train_per_class=5000,
    test_per_class=1000, image_size=224, epochs=30, batch_size=128, seeds=3, recipes=(SGD, ADAM),
    torch_workers=8, source_classes=(),
  ),
}  # fmt: skip


def _parse(value: str, kind: typing.Any) -> typing.Any:
  if kind == tuple[str, ...]:
    return tuple(v for v in value.split(",") if v)
  if kind is bool:
    return value.lower() in ("1", "true", "yes")
  return kind(value)


def resolve(name: str, overrides: list[str], recipes: str = "") -> Preset:
  """`PRESETS[name]` with `field=value` overrides (tuples comma-separated) and only the recipes
  named in `recipes` (comma-separated; "" keeps them all). An override of `epochs` or `seeds`
  applies to every recipe, its own value included."""
  if name not in PRESETS:
    raise errors.UserError(f"Unknown preset {name!r}: choose one of {sorted(PRESETS)}.")
  preset, types = PRESETS[name], typing.get_type_hints(Preset)
  changes = {}
  for item in overrides:
    field, equals, value = item.partition("=")
    if not equals:
      raise errors.UserError(f"--set {item}: write FIELD=VALUE, e.g. --set seeds=2.")
    if field not in types or field in ("name", "recipes"):
      settable = sorted(set(types) - {"name", "recipes"})
      raise errors.UserError(
        f"Cannot set {field!r}: choose one of {settable} (recipes: --recipes)."
      )
    try:
      changes[field] = _parse(value, types[field])
    except ValueError as error:
      kind = {int: "an integer", float: "a number"}.get(types[field], types[field])
      raise errors.UserError(f"--set {item}: {field} must be {kind}, got {value!r}.") from error
  for field in ("classes", "source_classes"):  # Before anything is trained on them.
    unknown = sorted(set(changes.get(field, ())) - set(cifar10_jpeg.CLASSES))
    if unknown:
      raise errors.UserError(
        f"--set {field}: {unknown} are not CIFAR-10 classes; choose from {cifar10_jpeg.CLASSES}."
      )
  if recipes:
    by_name = {r.name: r for r in preset.recipes}
    unknown = sorted(set(recipes.split(",")) - set(by_name))
    if unknown:
      raise errors.UserError(
        f"Preset {name} has no recipes {unknown}: choose from {sorted(by_name)}."
      )
    changes["recipes"] = tuple(by_name[r] for r in recipes.split(","))
  # `--set epochs=N` (or seeds) means every recipe: it also replaces a recipe's own value.
  own = {field: 0 for field in ("epochs", "seeds") if field in changes}
  if own:
    changes["recipes"] = tuple(
      dataclasses.replace(r, **own) for r in changes.get("recipes", preset.recipes)
    )
  return dataclasses.replace(preset, **changes)
