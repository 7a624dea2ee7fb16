"""The source weights both frameworks fine-tune from, as a body-only resnet18 state dict.

From torchvision (`IMAGENET1K_V1`: downloaded once, failing within seconds offline), from a
state-dict file, or trained here from scratch in PyTorch (`scripts/torch_reference.py`) on the
source classes, timed apart from the comparison and cached by its settings. The source's own
`fc` is dropped: every fine-tuning run draws a fresh head.
"""

import hashlib
import json
import pathlib

import torch

from convert import layout, torch_to_flax
from jaxresnet import errors, pretrained
from scripts import compare_data, compare_runs
from scripts.compare_presets import Preset

SOURCE_FIELDS = (
  "source_classes",
  "source_train_per_class",
  "source_test_per_class",
  "source_epochs",
  "source_optimizer",
  "source_lr",
  "image_size",
  "batch_size",
)
SOURCE_SEED = 0


def body_of(state_dict: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
  """The state dict without its `fc`, checked to be a resnet18's before any run starts."""
  body = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
  guess = layout.guess_arch({k: v.shape for k, v in body.items()})
  if guess != compare_runs.ARCH:
    hint = f" (it looks like a {guess} state dict)" if guess else ""
    raise errors.UserError(f"{origin} is not a torchvision {compare_runs.ARCH} state dict{hint}.")
  return body


def trained_source(preset: Preset, cache: pathlib.Path) -> tuple[pathlib.Path, dict]:
  """A resnet18 trained from scratch by torch_reference on the source classes, cached."""
  settings = {f: getattr(preset, f) for f in SOURCE_FIELDS}
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
  directory = cache / f"source-{digest}"
  body_file, info_file = directory / "body.pt", directory / "source.json"
  if info_file.is_file():
    return body_file, json.loads(info_file.read_text()) | {"cached": True}
  per_class = {"train": preset.source_train_per_class, "test": preset.source_test_per_class}
  data = compare_data.class_folder(cache, preset.source_classes, per_class)
  argv = compare_runs.reference_argv(preset, data, preset.source_optimizer, "",
                                     preset.source_epochs, SOURCE_SEED)  # fmt: skip
  argv += ["--lr", str(preset.source_lr), "--save", str(directory / "full.pt")]
  history, wall = compare_runs.run_torch_reference(argv, directory)
  origin = f"trained here from scratch (torch_reference, seed {SOURCE_SEED})"
  body = body_of(torch.load(directory / "full.pt", weights_only=True), origin)
  torch.save(body, body_file)
  info = {"origin": origin, "settings": settings, "history": history, "wall_seconds": wall}
  info_file.write_text(json.dumps(info, indent=2))
  return body_file, info | {"cached": False}


def source_body(preset: Preset, cache: pathlib.Path) -> tuple[pathlib.Path, dict]:
  """The body-only state dict's file, and where it came from (with its training, if here)."""
  if not preset.source:
    return trained_source(preset, cache)
  if pretrained.is_weights_name(preset.source):
    weights = torch_to_flax.torchvision_weights(compare_runs.ARCH, preset.source)
    state_dict, file = torch_to_flax.download_weights(compare_runs.ARCH, weights)
    origin = f"torchvision:{compare_runs.ARCH}:{weights.name}"
  else:
    file = pathlib.Path(preset.source).absolute()
    state_dict, origin = torch_to_flax.read_torch_checkpoint(file), str(file)
  sha256 = torch_to_flax.sha256(file)
  body_file = cache / f"body-{sha256[:16]}.pt"
  body = body_of(state_dict, origin)
  if not body_file.is_file():
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(body, body_file)
  return body_file, {"origin": origin, "sha256": sha256}
