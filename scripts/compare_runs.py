"""One fine-tuning run per framework and seed, as each framework's users run it.

PyTorch: `scripts/torch_reference.py` in its own process (torchvision transforms, DataLoader,
torch.optim). jaxresnet: the body converted by `convert.torch_to_flax` with a fresh head, then
`jaxresnet.train.train_and_evaluate` in this process. Both return the same record: per epoch
the train and test loss and accuracy, and the epoch's training seconds on the framework's own
clock (jaxresnet's excludes evaluation, as torch_reference's does).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping

import ml_collections
import torch

from configs import adam, sgd
from convert import torch_to_flax
from jaxresnet import pretrained, train
from jaxresnet import workdir as workdir_lib
from scripts import compare_data
from scripts.compare_presets import Preset, Recipe

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {"sgd": sgd, "adam": adam}
ARCH = "resnet18"


def run_torch_reference(argv: list[str], run_dir: pathlib.Path) -> tuple[list[dict], float]:
  """`python -m scripts.torch_reference ARGV` from this checkout; its history and wall seconds."""
  run_dir.mkdir(parents=True, exist_ok=True)
  history = run_dir / "history.json"
  command = [sys.executable, "-m", "scripts.torch_reference", *argv, "--json", str(history)]
  env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
  start = time.perf_counter()
  with open(run_dir / "log.txt", "w") as log:
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  wall = time.perf_counter() - start
  if result.returncode:
    tail = (run_dir / "log.txt").read_text()[-3000:]
    raise RuntimeError(f"{' '.join(command)} failed (exit {result.returncode}):\n{tail}")
  return json.loads(history.read_text())["history"], wall


def reference_argv(preset: Preset, data: pathlib.Path, optimizer: str, weights: str, epochs: int,
                   seed: int) -> list[str]:  # fmt: skip
  """torch_reference's arguments for a run of `preset`'s sizes and DataLoader settings."""
  fields = {
    "data": data, "optimizer": optimizer, "weights": weights, "epochs": epochs,
    "batch-size": preset.batch_size, "image-size": preset.image_size,
    "workers": preset.torch_workers, "threads": preset.torch_threads, "seed": seed,
  }  # fmt: skip
  return [item for name, value in fields.items() for item in (f"--{name}", str(value))]


def torch_run(
  preset: Preset,
  recipe: Recipe,
  seed: int,
  data: pathlib.Path,
  body: pathlib.Path,
  run_dir: pathlib.Path,
) -> dict:
  """One torch_reference run; `seed` is its `torch.manual_seed` (head, order, flips)."""
  weights = str(body) if recipe.pretrained else ""
  argv = reference_argv(preset, data, recipe.optimizer, weights, preset.epochs_of(recipe), seed)
  history, wall = run_torch_reference(argv, run_dir)
  epochs = [
    {
      "epoch": h["epoch"],
      **{f"{split}_{k}": h[split][k] for split in ("train", "test") for k in ("loss", "accuracy")},
      "train_seconds": h["train"]["seconds"],
    }
    for h in history
  ]
  return {
    "framework": "torch",
    "recipe": recipe.name,
    "seed": seed,
    "epochs": epochs,
    "wall_seconds": wall,
  }


def jaxresnet_config(
  preset: Preset,
  recipe: Recipe,
  seed: int,
  data: pathlib.Path,
  init_from: str,
  steps_per_epoch: int,
) -> ml_collections.ConfigDict:
  """The recipe's config file with this arm's data, sizes and seed (data order and flips)."""
  config = CONFIGS[recipe.optimizer].get_config()
  config.update(
    dataset=f"imagefolder:{data}",
    source_image_size=32,
    image_size=preset.image_size,
    batch_size=preset.batch_size,
    eval_batch_size=preset.eval_batch_size,
    num_epochs=preset.epochs_of(recipe),
    seed=seed,
    init_from=init_from,
    keep_checkpoints=1,
    log_every_steps=steps_per_epoch,  # One rate per epoch: that epoch's training time.
  )
  return config


def save_fresh_head(
  body: Mapping[str, torch.Tensor],
  num_classes: int,
  seed: int,
  source: str,
  directory: pathlib.Path,
) -> None:
  """The body with a fresh `num_classes` head (`torch.manual_seed(seed)`), converted."""
  variables = torch_to_flax.convert_state_dict(body, ARCH, num_classes, seed)
  metadata = {
    "arch": ARCH,
    "num_classes": num_classes,
    "source": source,
    "fresh_head": True,
    "seed": seed,
    "num_batches_tracked": torch_to_flax.batches_tracked(body),
  }
  pretrained.save_variables(directory, variables, metadata)


def jaxresnet_epochs(records: list[dict], images_per_epoch: int) -> list[dict]:
  """metrics.jsonl's end-of-epoch records as one dict per epoch (the step records give the rate:
  logged once per epoch, at its end)."""
  epochs: dict[int, dict] = {}
  prefixes = {"train_epoch/": "train_", "test/": "test_"}
  for record in records:
    if "epoch" not in record or record["epoch"] != int(record["epoch"]):
      continue
    epoch = epochs.setdefault(int(record["epoch"]), {"epoch": int(record["epoch"])})
    if "train/images_per_sec" in record:
      epoch["train_seconds"] = images_per_epoch / record["train/images_per_sec"]
    for prefix, name in prefixes.items():
      epoch |= {name + k: record[prefix + k] for k in ("loss", "accuracy") if prefix + k in record}
  return [epochs[e] for e in sorted(epochs)]


def jaxresnet_run(
  preset: Preset,
  recipe: Recipe,
  seed: int,
  data: pathlib.Path,
  body: Mapping[str, torch.Tensor],
  source: str,
  run_dir: pathlib.Path,
) -> dict:
  """One train_and_evaluate run in this process, from the body with a fresh head (or scratch)."""
  shutil.rmtree(run_dir, ignore_errors=True)  # Never resume an earlier comparison's run.
  init_from = ""
  if recipe.pretrained:
    init_from = str(run_dir / "init")
    save_fresh_head(body, len(preset.classes), seed, source, run_dir / "init")
  steps_per_epoch = compare_data.count_images(data, "train") // preset.batch_size
  config = jaxresnet_config(preset, recipe, seed, data, init_from, steps_per_epoch)
  start = time.perf_counter()
  train.train_and_evaluate(config, str(run_dir / "workdir"))
  wall = time.perf_counter() - start
  records = workdir_lib.read_history(run_dir / "workdir")
  epochs = jaxresnet_epochs(records, steps_per_epoch * preset.batch_size)
  return {
    "framework": "jaxresnet",
    "recipe": recipe.name,
    "seed": seed,
    "epochs": epochs,
    "wall_seconds": wall,
  }
