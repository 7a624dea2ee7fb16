"""torchvision ResNet weights -> jaxresnet variables (an Orbax checkpoint + metadata).

    python -m convert.torch_to_flax --weights IMAGENET1K_V1 --num-classes 10 --output DIR
    python -m convert.torch_to_flax --torch-checkpoint model.pt --output DIR --verify

The conversion is strict: every key of the state dict is used (but `num_batches_tracked`, which
goes into the metadata), every Flax variable is filled, every shape is checked, and all problems
are reported in one error. A `--num-classes` other than the checkpoint's gives a fresh head,
initialised exactly as torch's default `nn.Linear` under `torch.manual_seed(seed)`; so does a
body-only state dict (no `fc.*` keys), which needs `--num-classes`.
"""

import argparse
import hashlib
import pathlib
import shutil
import sys
from collections.abc import Mapping, Sequence

import torch
import torchvision

from convert import layout, verify
from jaxresnet import cli, errors, models, network, pretrained

StateDict = Mapping[str, torch.Tensor]


def read_torch_checkpoint(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
  """A state dict from a `torch.save` file (also wrapped in {"state_dict"|"model": ...})."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.UserError(f"No torch checkpoint at {path}: pass an existing file.")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch.load raises many types for a file it cannot read.
    # Its message for a file that is no pickle is a paragraph on `weights_only`: left to --verbose.
    short = "\n" not in str(e) and len(str(e)) <= 200
    raise errors.UserError(
      f"{path} is not a PyTorch checkpoint torch.load can read ({type(e).__name__}"
      f"{f': {e}' if short else ''}). Pass a file written by torch.save(model.state_dict(), path)."
    ) from e
  for wrapper in ("state_dict", "model"):
    if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
      obj = obj[wrapper]
  if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise errors.UserError(
      f"{path} holds a {type(obj).__name__}, not a state dict of tensors. Save the model with "
      "torch.save(model.state_dict(), path)."
    )
  prefix = "module."  # Saved from nn.DataParallel / DistributedDataParallel.
  if obj and all(k.startswith(prefix) for k in obj):
    obj = {k[len(prefix) :]: v for k, v in obj.items()}
  return dict(obj)


def torchvision_weights(arch: str, name: str) -> torchvision.models.WeightsEnum:
  """torchvision's weights of `arch` by enum name ("IMAGENET1K_V2") or "DEFAULT" (resolved)."""
  enum = torchvision.models.get_model_weights(arch)
  if name not in enum.__members__:
    raise errors.UserError(
      f"torchvision has no {arch} weights {name!r}; choose one of {list(enum.__members__)}."
    )
  return enum[name]


def eval_transform_of(weights: torchvision.models.WeightsEnum) -> dict[str, int]:
  """The evaluation resize and crop the weights were published with (their `transforms()`, an
  ImageClassification preset): training's imagenet transforms evaluate as they say."""
  preset = weights.transforms()
  return {"resize_size": int(preset.resize_size[0]), "crop_size": int(preset.crop_size[0])}


def download_weights(
  arch: str, weights: torchvision.models.WeightsEnum
) -> tuple[dict[str, torch.Tensor], pathlib.Path]:
  """torchvision's published weights (downloaded once into torch.hub's cache) and their file."""
  file = pathlib.Path(torch.hub.get_dir()) / "checkpoints" / pathlib.Path(weights.url).name
  if not file.is_file():
    network.check_reachable(
      weights.url,
      f"torchvision's {arch} {weights.name} weights",
      f"Download {weights.url} on a machine with a network and pass it with "
      f"--torch-checkpoint FILE (or place it at {file}).",
    )
  state_dict = weights.get_state_dict(progress=True, check_hash=True)
  return state_dict, file


def with_head(state_dict: StateDict, arch: str, num_classes: int, seed: int) -> StateDict:
  """The state dict, its `fc` replaced by a fresh torch `nn.Linear` if the class count differs."""
  fc = state_dict.get("fc.weight")
  if fc is not None and fc.shape[0] == num_classes:
    return state_dict
  in_features = layout.variable_shapes(arch, num_classes)[("params", "fc", "kernel")][0]
  with torch.random.fork_rng(devices=[]):
    torch.manual_seed(seed)
    head = torch.nn.Linear(in_features, num_classes)
  dtype = fc.dtype if fc is not None else torch.float32
  fresh = {f"fc.{k}": v.to(dtype) for k, v in head.state_dict().items()}
  return {**{k: v for k, v in state_dict.items() if not k.startswith("fc.")}, **fresh}


def convert_state_dict(
  state_dict: StateDict, arch: str = "resnet18", num_classes: int | None = None, seed: int = 0
) -> pretrained.Variables:
  """A torchvision state dict -> {"params": ..., "batch_stats": ...} for `models.create_model`.

  Args:
    state_dict: torchvision ResNet weights (tensors, any float dtype, which is kept).
    arch: torchvision's name, a key of `models.MODELS`.
    num_classes: the head's size; None keeps the checkpoint's, another gives a fresh head. A
      body-only state dict (no `fc.*` keys, e.g. a feature extractor) always gets a fresh head,
      so it needs `num_classes`.
    seed: torch seed of the fresh head.
  Returns:
    Nested dicts of numpy arrays.
  Raises:
    ValueError: naming the missing keys, unexpected keys and shape mismatches (the first 10
      of each) in one line; or for a body-only state dict without `num_classes`.
  """
  if num_classes is None:
    if "fc.weight" not in state_dict:
      raise errors.UserError(
        "The state dict has no fc (a body-only state dict): pass --num-classes N for a fresh "
        "head of N classes."
      )
    num_classes = state_dict["fc.weight"].shape[0]
  state_dict = with_head(state_dict, arch, num_classes, seed)
  leaves, missing, mismatched = {}, [], {}
  for path, shape in layout.variable_shapes(arch, num_classes).items():
    key = layout.torch_key(path)
    if key not in state_dict:
      missing.append(key)
      continue
    array = layout.to_flax(path, state_dict[key].detach().cpu().numpy())
    if array.shape != shape:
      mismatched[key] = (
        f"{key}: {tuple(state_dict[key].shape)}, expected {layout.torch_shape(path, shape)}"
      )
    leaves[path] = array
  used = {layout.torch_key(p) for p in leaves}
  unexpected = sorted(k for k in state_dict if k not in used and not k.endswith(layout.COUNTER))
  if missing or unexpected or mismatched:
    guess = layout.guess_arch({k: v.shape for k, v in state_dict.items()})
    hint = f" It looks like a {guess} state dict: pass --arch {guess}." if guess else ""
    in_torch_order = [mismatched[k] for k in state_dict if k in mismatched]  # Layer by layer.
    problems = [("missing keys", missing), ("unexpected keys", unexpected),
                ("shape mismatches", in_torch_order)]  # fmt: skip
    listed = "; ".join(f"{title} ({len(keys)}): {_first(keys)}" for title, keys in problems if keys)
    raise errors.UserError(
      f"The state dict does not match torchvision's {arch} with {num_classes} classes "
      f"({listed}).{hint}"
    )
  return layout.unflatten(leaves)


def _first(keys: list[str], n: int = 10) -> str:
  """The first `n` of `keys`, and how many more: an error line stays readable."""
  return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def batches_tracked(state_dict: StateDict) -> dict[str, int]:
  """torch's per-BatchNorm step counters, kept in the metadata so an export can restore them."""
  return {k: int(v) for k, v in state_dict.items() if k.endswith(layout.COUNTER)}


def sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with path.open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = cli.ArgumentParser(prog="python -m convert.torch_to_flax", description=__doc__)
  parser.add_argument("--arch", default="resnet18", choices=list(models.MODELS))
  source = parser.add_mutually_exclusive_group()
  source.add_argument(
    "--weights", help="a torchvision weights name of --arch, or DEFAULT (default IMAGENET1K_V1)"
  )
  source.add_argument("--torch-checkpoint", type=pathlib.Path, help="a torch.save'd state dict")
  parser.add_argument("--num-classes", type=int, help="head size; default: the checkpoint's")
  parser.add_argument("--seed", type=int, default=0, help="torch seed of a fresh head")
  parser.add_argument("--output", type=pathlib.Path, required=True)
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  parser.add_argument("--verbose", action="store_true", help="tracebacks of user errors too")
  parser.add_argument("--verify", action="store_true", help="compare torch and Flax logits")
  parser.add_argument("--verify-images", type=pathlib.Path, help="folder of images for --verify")
  args = parser.parse_args(argv)
  if args.num_classes is not None and args.num_classes < 1:
    parser.error(f"--num-classes must be positive, got {args.num_classes}.")
  if args.verify_images is not None and not args.verify_images.is_dir():
    parser.error(f"--verify-images {args.verify_images} is not a folder: pass a folder of images.")
  return args


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.output.exists() and not args.overwrite:
    raise errors.UserError(
      f"--output {args.output} already exists; choose a new directory or pass --overwrite."
    )
  eval_transform = None
  if args.torch_checkpoint:
    state_dict, file = read_torch_checkpoint(args.torch_checkpoint), args.torch_checkpoint
    source = str(file.absolute())
  else:
    weights = torchvision_weights(args.arch, args.weights or "IMAGENET1K_V1")
    state_dict, file = download_weights(args.arch, weights)
    source = f"torchvision:{args.arch}:{weights.name}"
    eval_transform = eval_transform_of(weights)
  variables = convert_state_dict(state_dict, args.arch, args.num_classes, args.seed)
  num_classes = variables["params"]["fc"]["bias"].shape[0]
  metadata = {
    "arch": args.arch,
    "num_classes": num_classes,
    "source": source,
    "source_sha256": sha256(file),
    "fresh_head": "fc.bias" not in state_dict or state_dict["fc.bias"].shape[0] != num_classes,
    "seed": args.seed,
    "num_batches_tracked": batches_tracked(state_dict),
    "torch_version": torch.__version__,
    "torchvision_version": torchvision.__version__,
    **({"eval_transform": eval_transform} if eval_transform else {}),
  }
  if args.output.exists():
    shutil.rmtree(args.output)
  try:
    pretrained.save_variables(args.output, variables, metadata)
  except OSError as error:
    raise errors.UserError(
      f"Cannot write --output {args.output} ({error.strerror or error}: {error.filename}): pass a "
      "new folder in a writable place."
    ) from error
  print(f"Wrote {args.arch} ({num_classes} classes) from {source} to {args.output}")
  if args.verify:
    torch_sd = with_head(state_dict, args.arch, num_classes, args.seed)
    verify.report(args.arch, torch_sd, variables, args.verify_images)


if __name__ == "__main__":
  cli.run_plain(main)
