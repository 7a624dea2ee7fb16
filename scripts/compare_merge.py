"""Merges `scripts/compare_torch.py` outputs that ran other seeds of one experiment into one.

    python -m scripts.compare_torch --preset cpu --output runs/a
    python -m scripts.compare_torch --preset cpu --recipes adam --set first_seed=14 --output runs/b
    python -m scripts.compare_merge --output runs/merged runs/a runs/b

More seeds, later or on another machine, without rerunning the first ones. The inputs must be
the same experiment: the same preset fields but the seeds (so the same classes, sizes, epochs
and recipes' settings) and the same source. A seed of a recipe and framework found in two inputs
is refused, not averaged twice. Writes what compare_torch writes, from the merged runs; the
report names each input's commit, date and CPU.
"""

import json
import pathlib
import sys
from collections.abc import Sequence

from jaxresnet import cli, errors
from scripts import compare_report

SEED_FIELDS = ("seeds", "first_seed", "recipes")  # What may differ; recipes are checked apart.


def _untimed(value):
  """`value` without its timing and cache entries, at any depth: what a rerun repeats."""
  if isinstance(value, dict):
    return {k: _untimed(v) for k, v in value.items()
            if k not in ("seconds", "wall_seconds", "cached")}  # fmt: skip
  return [_untimed(v) for v in value] if isinstance(value, list) else value


def _experiment(results: dict) -> dict:
  """What must agree across inputs: the preset without its seeds, and the source (its origin,
  settings and, if trained here, its training's losses and accuracies)."""
  preset = {k: v for k, v in results["preset"].items() if k not in SEED_FIELDS}
  return {"preset": preset, "source": _untimed(results["source"])}


def _seed_ranges(runs: Sequence[dict]) -> str:
  """'adam 14-21, sgd 0-4': the seeds of each recipe in `runs`."""
  seeds: dict[str, set[int]] = {}
  for run in runs:
    seeds.setdefault(run["recipe"], set()).add(run["seed"])
  return ", ".join(f"{r} {min(s)}-{max(s)}" if len(s) > 1 else f"{r} {min(s)}"
                   for r, s in seeds.items())  # fmt: skip


def merge(parts: Sequence[dict]) -> dict:
  """One results dict from several (`parts[0]`'s preset, meta and source, all their runs)."""
  first = parts[0]
  recipes = {r["name"]: r for r in first["preset"]["recipes"]}
  runs, seen, ours = [], set(), _experiment(first)
  for part in parts:
    theirs = _experiment(part)
    if ours != theirs:
      differ = sorted(k for k in ours["preset"] if ours["preset"][k] != theirs["preset"].get(k))
      differ += ["source"] if ours["source"] != theirs["source"] else []
      raise errors.UserError(f"These outputs are not one experiment (they differ in {differ}): "
                             "merge only runs of one preset and source.")  # fmt: skip
    for recipe in part["preset"]["recipes"]:
      own = recipes.setdefault(recipe["name"], recipe)
      if {**own, "seeds": 0} != {**recipe, "seeds": 0}:
        raise errors.UserError(f"Recipe {recipe['name']!r} differs between the outputs: {own} "
                               f"vs {recipe}; merge only runs of one recipe.")  # fmt: skip
    for run in part["runs"]:
      key = (run["framework"], run["recipe"], run["seed"])
      if key in seen:
        raise errors.UserError(f"{key[0]} {key[1]} seed {key[2]} is in two outputs: merge "
                               "outputs of different seeds (--set first_seed=N).")  # fmt: skip
      seen.add(key)
      runs.append(run)
  counts = {name: len({r["seed"] for r in runs if r["recipe"] == name}) for name in recipes}
  preset = first["preset"] | {
    "recipes": [recipe | {"seeds": counts[name]} for name, recipe in recipes.items()],
    "first_seed": min(r["seed"] for r in runs),
  }
  merged = [part["meta"] | {"seeds": _seed_ranges(part["runs"])} for part in parts[1:]]
  return first | {"preset": preset, "meta": first["meta"] | {"merged": merged}, "runs": runs}


def read(path: pathlib.Path) -> dict:
  """The results of a compare_torch output (its folder or its results JSON)."""
  path = path / compare_report.RESULTS if path.is_dir() else path
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise errors.UserError(f"Cannot read {path} ({e}): pass compare_torch output folders or "
                           f"their {compare_report.RESULTS}.") from None  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
  parser = cli.ArgumentParser(prog="python -m scripts.compare_merge", description=__doc__)
  parser.add_argument("--output", required=True, help="Where the merged outputs go.")
  parser.add_argument("inputs", nargs="+", type=pathlib.Path, help="compare_torch outputs.")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  print(compare_report.write(merge([read(f) for f in args.inputs]), pathlib.Path(args.output)))


if __name__ == "__main__":
  cli.run_plain(main)
