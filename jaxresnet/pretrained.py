"""Reading and writing converted weights: an Orbax checkpoint plus a metadata JSON.

Written by `python -m convert.torch_to_flax`, read by training. Kept free of torch so the
training process (which holds TensorFlow) can load converted weights.
"""

import json
import pathlib
from typing import Any

import orbax.checkpoint as ocp

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
    raise FileNotFoundError(
      f"{directory} holds no converted weights ({METADATA_FILE} is missing). Create them with "
      f"`python -m convert.torch_to_flax --output {directory}`."
    )
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is corrupt ({e}); convert the weights again.") from e


def load_variables(directory: str | pathlib.Path) -> Variables:
  """The variables written by `save_variables`, as numpy arrays in their saved dtypes."""
  directory = pathlib.Path(directory).absolute()
  load_metadata(directory)  # Fails clearly on a directory that is not a conversion.
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      return checkpointer.restore(directory / VARIABLES_DIR)
  except Exception as e:  # Orbax raises many types for a damaged directory.
    raise ValueError(
      f"Could not read the converted weights in {directory / VARIABLES_DIR}: {e}. The "
      "directory is damaged; convert the weights again."
    ) from e
