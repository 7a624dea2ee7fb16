"""jaxresnet variables -> a torchvision ResNet state dict, to take a fine-tuned model to PyTorch.

    python -m convert.flax_to_torch --input DIR --output model.pt [--steps N]
    python -m convert.flax_to_torch --input WORKDIR [--checkpoint best] --output model.pt

`DIR` is a converter output (`python -m convert.torch_to_flax`); `WORKDIR` a training workdir
(`python -m jaxresnet.train`), whose checkpoint's step is the `--steps`. The file loads with
`torchvision.models.resnet18(num_classes=N).load_state_dict(torch.load(FILE), strict=True)`;
the export is checked to load so before it is written. Flax has no `num_batches_tracked`: the
counters come back from the converter's metadata, advanced by `--steps`, the number of training
steps (train-mode forward passes) since the conversion.
"""

import argparse
import pathlib
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torchvision

from convert import layout
from jaxresnet import checkpointing, cli, errors, models, pretrained
from jaxresnet import workdir as workdir_lib


def export_state_dict(
  variables: dict, num_batches_tracked: Mapping[str, int] | None = None, steps: int = 0
) -> dict[str, torch.Tensor]:
  """{"params", "batch_stats"} -> torch state dict, arrays in torch layout and their own dtype.

  Args:
    variables: numpy or jax arrays, as `models.create_model` uses them.
    num_batches_tracked: torch's counters at conversion (the converter's metadata); a missing
      counter counts from 0.
    steps: training steps since then, added to every counter as torch's train mode would.
  Returns:
    The state dict, `num_batches_tracked` included for every BatchNorm.
  Raises:
    ValueError: on a counter for a BatchNorm the variables do not have.
  """
  state_dict = {}
  for path, array in layout.flatten(variables):
    # A writable copy: torch.from_numpy would otherwise share (read-only) memory.
    state_dict[layout.torch_key(path)] = torch.from_numpy(np.array(layout.to_torch(path, array)))
  stat = "running_mean"  # One per BatchNorm.
  counters = {k.removesuffix(stat) + layout.COUNTER: 0 for k in state_dict if k.endswith(stat)}
  num_batches_tracked = num_batches_tracked or {}
  unknown = sorted(set(num_batches_tracked) - set(counters))
  if unknown:
    raise errors.UserError(
      f"Counters for BatchNorms the variables do not have: {', '.join(unknown)}."
    )
  counters.update(num_batches_tracked)
  counters = {k: torch.tensor(int(n) + steps, dtype=torch.long) for k, n in counters.items()}
  return {**state_dict, **counters}


def torchvision_state_dict(
  state_dict: Mapping[str, torch.Tensor], arch: str, num_classes: int
) -> dict[str, torch.Tensor]:
  """The state dict in torchvision's key order, once torchvision's model loads it strictly.

  Raises:
    ValueError: naming the missing and unexpected keys and mismatched shapes.
  """
  model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
  try:
    model.load_state_dict(state_dict, strict=True)
  except RuntimeError as e:
    raise errors.UserError(
      f"The export does not load into torchvision's {arch} with {num_classes} classes: {e}"
    ) from e
  return {k: state_dict[k] for k in model.state_dict()}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = cli.ArgumentParser(prog="python -m convert.flax_to_torch", description=__doc__)
  parser.add_argument(
    "--input", type=pathlib.Path, required=True, help="a converter output or a training workdir"
  )
  parser.add_argument(
    "--checkpoint", default="latest", help="of a workdir: latest, best (on validation) or a step"
  )
  parser.add_argument("--output", type=pathlib.Path, required=True, help="the .pt file to write")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  parser.add_argument("--verbose", action="store_true", help="tracebacks of user errors too")
  parser.add_argument(
    "--steps", type=int, default=0, help="training steps since the conversion (default 0)"
  )
  args = parser.parse_args(argv)
  if args.steps < 0:
    parser.error(f"--steps must be >= 0, got {args.steps}.")
  return args


def load_workdir(workdir: pathlib.Path, which: str) -> tuple[dict, dict, int]:
  """A training checkpoint's variables, converter-style metadata, and its step.

  The BatchNorm counters are those of the weights the run started from, which training saved in
  the checkpoint's model info (0 for a scratch run), advanced by the step.
  """
  variables, info, step = checkpointing.load_trained(workdir, which)
  metadata = {"arch": info["model"], "num_classes": info["num_classes"],
              "num_batches_tracked": info.get("num_batches_tracked", {})}  # fmt: skip
  return variables, metadata, step


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.output.exists() and not args.overwrite:
    raise errors.UserError(
      f"--output {args.output} already exists; choose a new file or pass --overwrite."
    )
  if workdir_lib.is_training_workdir(args.input):
    variables, metadata, steps = load_workdir(args.input, args.checkpoint)
  else:
    metadata, steps = pretrained.load_metadata(args.input), args.steps
    variables = pretrained.load_variables(args.input)
  arch, num_classes = metadata.get("arch"), metadata.get("num_classes")
  if arch not in models.MODELS or not isinstance(num_classes, int):
    raise errors.UserError(
      f"{args.input / pretrained.METADATA_FILE} names no model (arch={arch!r}, "
      f"num_classes={num_classes!r}); convert the weights again."
    )
  state_dict = export_state_dict(variables, metadata.get("num_batches_tracked"), steps)
  state_dict = torchvision_state_dict(state_dict, arch, num_classes)
  try:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("wb") as file:
      torch.save(state_dict, file)
  except OSError as error:
    raise errors.UserError(
      f"Cannot write --output {args.output} ({error.strerror or error}: {error.filename}): pass a "
      "file in a writable folder."
    ) from error
  print(f"Wrote {arch} ({num_classes} classes) from {args.input} to {args.output}")


if __name__ == "__main__":
  cli.run_plain(main)
