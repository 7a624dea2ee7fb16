"""Same recipe, same result? jaxresnet's fine-tuning measured against PyTorch's, seed for seed.

    python -m scripts.compare_torch --preset cpu                 # 2 CPU cores, about an hour
    python -m scripts.compare_torch --preset gpu                 # one GPU, about 5 minutes
    python -m scripts.compare_torch --preset paper               # ImageNet weights: network, GPU
    python -m scripts.compare_torch --preset cpu --set seeds=2 --set epochs=2 --recipes sgd

Both frameworks start from the same source body (`scripts/compare_source.py`; for `cpu` and
`gpu` a resnet18 trained here from scratch in PyTorch on 5 CIFAR-10 classes, cached) with a
fresh head drawn per seed, and fine-tune on the same image folder of the other classes
(`scripts/compare_data.py`) with the same recipe, each framework as its users run it
(`scripts/compare_runs.py`); the seed draws the head, the data order and the flips, in each
framework independently. A from-scratch arm (`scratch_sgd`) runs the SGD recipe without the
source. Presets are data (`scripts/compare_presets.py`); `--set FIELD=VALUE` changes a field.

Writes into --output: `results.json` (every epoch of every run, the preset, the source, versions,
git commit and hardware, the statistics), `summary.md` (accuracy table with Welch's CIs and TOST,
the per-epoch check, time per run) and `curves.png` (test accuracy and loss, mean ± 1 std).
`--set first_seed=N` runs seeds N, N+1, ...; `scripts/compare_merge.py` merges such outputs.
"""

import torchvision  # noqa: F401  (before TensorFlow, which jaxresnet may load: the other order crashes)

# isort: split
import argparse
import dataclasses
import pathlib
import sys
from collections.abc import Sequence

import jax
import torch

from jaxresnet import cli
from scripts import (
  bench_report,
  compare_data,
  compare_presets,
  compare_report,
  compare_runs,
  compare_source,
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = cli.ArgumentParser(prog="python -m scripts.compare_torch", description=__doc__)
  parser.add_argument("--preset", required=True, choices=sorted(compare_presets.PRESETS))
  parser.add_argument("--output", default="", help="Default: runs/compare-PRESET.")
  parser.add_argument(
    "--cache-dir",
    default="~/.cache/jaxresnet/compare",
    help="Image folders, source weights and compiled programs, reused across runs.",
  )
  parser.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="Change a preset field, e.g. seeds=2 (tuples comma-separated).",
  )
  parser.add_argument("--recipes", default="", help="Comma-separated; default: the preset's.")
  parser.add_argument("--verbose", action="store_true", help="Tracebacks of user errors too.")
  return parser.parse_args(argv)


def run_all(
  preset: compare_presets.Preset,
  data: pathlib.Path,
  body_file: pathlib.Path,
  origin: str,
  output: pathlib.Path,
) -> list[dict]:
  """Every recipe and seed in both frameworks, the two interleaved so load drifts hit both."""
  body = torch.load(body_file, weights_only=True)
  runs = []
  for recipe in preset.recipes:
    for seed in preset.seeds_of(recipe):
      run_dir = output / "runs" / recipe.name
      runs.append(
        compare_runs.torch_run(preset, recipe, seed, data, body_file, run_dir / f"torch-seed{seed}")
      )
      runs.append(
        compare_runs.jaxresnet_run(
          preset, recipe, seed, data, body, origin, run_dir / f"jaxresnet-seed{seed}"
        )
      )
      accuracies = ", ".join(
        f"{r['framework']} {100 * r['epochs'][-1]['test_accuracy']:.2f}%" for r in runs[-2:]
      )
      print(f"{recipe.name} seed {seed}: test accuracy {accuracies}", flush=True)
  return runs


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  preset = compare_presets.resolve(args.preset, args.set, args.recipes)
  output = pathlib.Path(args.output or f"runs/compare-{preset.name}")
  cache = pathlib.Path(args.cache_dir).expanduser()
  # Every jaxresnet run compiles the same programs: once on disk, then read by every later seed
  # and rerun (the in-memory cache does not span train_and_evaluate calls).
  jax.config.update("jax_compilation_cache_dir", str(cache / "xla"))
  body_file, source = compare_source.source_body(preset, cache)  # First: fails fast offline.
  per_class = {"train": preset.train_per_class, "test": preset.test_per_class}
  data = compare_data.class_folder(cache, preset.classes, per_class)
  runs = run_all(preset, data, body_file, source["origin"], output)

  results = {
    "preset": dataclasses.asdict(preset),
    "meta": bench_report.machine_info(args),
    "source": source,
    "data": str(data),
    "runs": runs,
  }
  print(compare_report.write(results, output))


if __name__ == "__main__":
  cli.run_plain(main)
