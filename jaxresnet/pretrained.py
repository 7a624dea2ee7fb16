"""Converted weights: an Orbax checkpoint plus a metadata JSON, and getting them for training.

Written by `python -m convert.torch_to_flax`, read by training. Kept free of torch so the
training process (which holds TensorFlow) can load converted weights.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Any

import orbax.checkpoint as ocp
from absl import logging

from jaxresnet import errors

VARIABLES_DIR = "variables"
METADATA_FILE = "metadata.json"

Variables = dict[str, Any]


def save_variables(directory: str | pathlib.Path, variables: Variables, metadata: dict) -> None:
  """Writes `variables` ({"params", "batch_stats"}) and `metadata` into a new `directory`."""
  directory = pathlib.Path(directory).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / VARIABLES_DIR, variables)
  (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def load_metadata(directory: str | pathlib.Path) -> dict:
  """The converter's metadata (arch, num_classes, source, ...), with a clear error if absent."""
  path = pathlib.Path(directory) / METADATA_FILE
  if not path.is_file():
    raise errors.UserError(
      f"{directory} holds no converted weights ({METADATA_FILE} is missing). Create them with "
      f"`python -m convert.torch_to_flax --output {directory}`."
    )
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise errors.UserError(f"{path} is corrupt ({e}); convert the weights again.") from e


def load_variables(directory: str | pathlib.Path) -> Variables:
  """The variables written by `save_variables`, as numpy arrays in their saved dtypes."""
  directory = pathlib.Path(directory).absolute()
  load_metadata(directory)  # Fails clearly on a directory that is not a conversion.
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      return checkpointer.restore(directory / VARIABLES_DIR)
  except Exception as e:  # Orbax raises many types for a damaged directory.
    raise errors.UserError(
      f"Could not read the converted weights in {directory / VARIABLES_DIR}: {e}. The "
      "directory is damaged; convert the weights again."
    ) from e


def is_weights_name(init_from: str) -> bool:
  """True for a torchvision weights name such as "IMAGENET1K_V1" (not a path)."""
  return bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", init_from))


def resolve(init_from: str) -> pathlib.Path | None:
  """Checks `config.init_from` without loading anything: a directory, a weights name or ""."""
  if not init_from or is_weights_name(init_from):
    return None
  directory = pathlib.Path(init_from).expanduser()
  if not (directory / METADATA_FILE).is_file():
    raise errors.UserError(
      f"config.init_from={init_from!r} is neither a directory written by "
      "`python -m convert.torch_to_flax` nor a torchvision weights name (e.g. IMAGENET1K_V1). "
      "Convert weights into it first, or pass --config.init_from='' to train from scratch."
    )
  return directory


def cache_directory(
  arch: str, weights: str, num_classes: int, seed: int, cache_dir: str
) -> pathlib.Path:
  """Where `convert_torchvision` keeps one conversion."""
  return pathlib.Path(cache_dir).expanduser() / f"{arch}-{weights}-{num_classes}classes-seed{seed}"


def convert_torchvision(
  arch: str, weights: str, num_classes: int, seed: int, cache_dir: str
) -> pathlib.Path:
  """Converts torchvision's `weights` once into `cache_dir` and returns the directory.

  The conversion runs in a subprocess: the training process holds TensorFlow, and importing
  torchvision after TensorFlow crashes (their LLVMs clash).
  """
  directory = cache_directory(arch, weights, num_classes, seed, cache_dir)
  if (directory / METADATA_FILE).is_file():
    return directory
  staging = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
  command = [
    sys.executable, "-m", "convert.torch_to_flax", "--arch", arch, "--weights", weights,
    "--num-classes", str(num_classes), "--seed", str(seed), "--output", str(staging), "--overwrite",
  ]  # fmt: skip
  logging.info("Converting torchvision's %s %s weights: %s", arch, weights, " ".join(command))
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode:
    shutil.rmtree(staging, ignore_errors=True)
    raise errors.UserError(
      f"Could not convert torchvision's {arch} {weights} weights:\n{result.stderr.strip()[-3000:]}"
      f"\nFor training, convert them yourself (`python -m convert.torch_to_flax --arch {arch} "
      f"--torch-checkpoint FILE --num-classes {num_classes} --output DIR`) and pass "
      "--config.init_from=DIR, or --config.init_from='' to train from scratch."
    )
  staging.rename(directory)
  return directory
