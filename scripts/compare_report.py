"""The comparison's outputs: a summary per recipe, its markdown table, and the curves PNG.

Accuracies are in points (percent). Each framework's seeds are independent runs, so its final
test accuracies are one sample per framework, compared by `compare_stats.welch` (jaxresnet minus
PyTorch); every epoch of every recipe is also tested, Bonferroni-corrected over all of them.
Time per run is split as each framework's own clock allows: the training seconds of a steady
epoch (the mean of epochs 2..E), the first epoch's extra (jaxresnet's compilation, DataLoader
workers starting), and the rest of the wall time (start-up, evaluation, checkpoints).
"""

import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # Files only; never a display.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from scripts import compare_stats  # noqa: E402

FRAMEWORKS = ("jaxresnet", "torch")
TRANSFER_MARGIN = 5.0  # Points: fine-tuning must beat scratch by this, with a 95% CI above 0.
LABELS = {"jaxresnet": "jaxresnet", "torch": "PyTorch"}
RESULTS, SUMMARY, CURVES = "results.json", "summary.md", "curves.png"


def curves(runs: Sequence[dict], recipe: str, framework: str, key: str) -> np.ndarray:
  """[seed, epoch] values of `key` of one recipe and framework, seeds in order."""
  chosen = sorted(
    (r for r in runs if (r["recipe"], r["framework"]) == (recipe, framework)),
    key=lambda r: r["seed"],
  )
  return np.array([[e[key] for e in r["epochs"]] for r in chosen], float)


def timing(runs: Sequence[dict]) -> dict[str, float]:
  """Means over seeds of the run-time split (see the module docstring)."""
  train = np.array([[e["train_seconds"] for e in r["epochs"]] for r in runs], float)
  steady = train[:, 1:].mean(axis=1) if train.shape[1] > 1 else np.full(len(runs), math.nan)
  walls = np.array([r["wall_seconds"] for r in runs], float)
  return {
    "steady_epoch_train_s": float(steady.mean()),
    "first_epoch_extra_s": float((train[:, 0] - steady).mean()),
    "outside_training_s": float((walls - train.sum(axis=1)).mean()),
    "wall_s": float(walls.mean()),
  }


def summarise(runs: Sequence[dict], recipes: Sequence[str]) -> dict:
  """Per recipe: final test accuracies per seed, their comparison and timing; and the epochs
  where the test-accuracy curves separate."""
  summary, per_epoch = {"recipes": {}}, {}
  for recipe in recipes:
    acc = {fw: 100 * curves(runs, recipe, fw, "test_accuracy") for fw in FRAMEWORKS}
    comparison = compare_stats.welch(acc["jaxresnet"][:, -1], acc["torch"][:, -1])
    summary["recipes"][recipe] = {
      "final_test_accuracy": {fw: acc[fw][:, -1].tolist() for fw in FRAMEWORKS},
      "comparison": dataclasses.asdict(comparison) | {"equivalent": comparison.equivalent},
      "timing": {
        fw: timing([r for r in runs if (r["recipe"], r["framework"]) == (recipe, fw)])
        for fw in FRAMEWORKS
      },
    }
    per_epoch[recipe] = acc["jaxresnet"], acc["torch"]
  level, separated = compare_stats.separated_epochs(per_epoch)
  summary["separation"] = {
    "alpha": compare_stats.ALPHA,
    "per_test_level": level,
    "separated": separated,
  }
  summary["transfer"] = transfer(summary["recipes"])
  return summary


def transfer(recipes: dict) -> dict:
  """Per framework, what the source weights gain over scratch: each fine-tuning recipe's final
  test accuracy minus its from-scratch twin's (`scratch_NAME`), with Welch's CIs."""
  gains = {}
  for name, row in recipes.items():
    scratch = recipes.get(f"scratch_{name}")
    if scratch is None:
      continue
    for fw in FRAMEWORKS:
      a, b = row["final_test_accuracy"][fw], scratch["final_test_accuracy"][fw]
      c = compare_stats.welch(a, b)
      real = c.ci95[0] > 0 and c.diff >= TRANSFER_MARGIN
      gains[f"{name}/{fw}"] = {"gain": c.diff, "ci95": c.ci95, "real": bool(real)}
  return gains


def _num(x: float, spec: str = ".2f") -> str:
  return "n/a" if math.isnan(x) else format(x, spec)


def _interval(ci: Sequence[float]) -> str:
  return "n/a" if math.isnan(ci[0]) else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def markdown(summary: dict, preset: dict, meta: dict, source: dict) -> str:
  """The report: what ran where, the accuracy table, the per-epoch check, the time table."""
  margin = compare_stats.EQUIVALENCE_MARGIN
  lines = [
    f"# jaxresnet vs PyTorch, preset `{preset['name']}`",
    "",
    f"git {meta['git_commit'][:10]}{' (dirty)' if meta['git_dirty'] else ''}, {meta['date']}; "
    f"{meta['cpu']} ({meta['cpu_cores_usable']} cores usable), jax on {meta['jax_device']}; "
    f"jax {meta['jax']}, flax {meta['flax']}, torch {meta['torch']}, "
    f"torchvision {meta['torchvision']}.",
    *(
      f"Merged with the seeds {part['seeds']} of git {part['git_commit'][:10]}, {part['date']} "
      f"({part['cpu']})."
      for part in meta.get("merged", [])
    ),
    "",
    f"Source: {source['origin']}"
    + (
      f"; its training took {source['wall_seconds']:.0f} s, apart from the runs below"
      f"{' (cached from an earlier comparison)' if source.get('cached') else ''}"
      if "wall_seconds" in source
      else ""
    )
    + ".",
    f"Fine-tuning: {len(preset['classes'])} classes ({', '.join(preset['classes'])}), "
    f"{preset['train_per_class']} train and {preset['test_per_class']} test images each, "
    f"{preset['image_size']}x{preset['image_size']}, {preset['epochs']} epochs of batch "
    f"{preset['batch_size']}"
    + "".join(f"; {r['name']}: {r['epochs']} epochs" for r in preset["recipes"] if r["epochs"])
    + ".",
    "",
    f"Final test accuracy (%), mean ± std over seeds; difference jaxresnet − PyTorch with "
    f"Welch's CIs; equivalent when the 90% CI lies within ±{margin} points (TOST, α = 0.05).",
    "",
    f"| recipe | seeds | jaxresnet | PyTorch | difference | 95% CI | 90% CI | TOST ±{margin} |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for recipe, row in summary["recipes"].items():
    c = row["comparison"]
    tost = (
      "n/a"
      if math.isnan(c["tost_p"])
      else (f"{'equivalent' if c['equivalent'] else 'not shown'} (p = {c['tost_p']:.3g})")
    )
    lines.append(
      f"| {recipe} | {c['n_a']} / {c['n_b']} | {c['mean_a']:.2f} ± {_num(c['std_a'])} | "
      f"{c['mean_b']:.2f} ± {_num(c['std_b'])} | {c['diff']:+.2f} | {_interval(c['ci95'])} | "
      f"{_interval(c['ci90'])} | {tost} |"
    )
  sep = summary["separation"]
  level = _num(sep["per_test_level"], ".2g")
  lines += [
    "",
    "Per-epoch test accuracy, Welch's test at every epoch of every recipe, "
    f"Bonferroni-corrected (family α = {sep['alpha']}, per test {level}): ",
  ]
  if math.isnan(sep["per_test_level"]):
    lines[-1] += "no test (needs at least 2 seeds per framework)."
  elif not sep["separated"]:
    lines[-1] += "no epoch separates."
  else:
    lines[-1] += (
      "the curves separate at "
      + ", ".join(
        f"{s['recipe']} epoch {s['epoch']} ({s['diff']:+.2f} points, p = {s['p_value']:.2g})"
        for s in sep["separated"]
      )
      + "."
    )
  if summary["transfer"]:
    lines += ["", "Transfer, final test accuracy fine-tuned minus from scratch (real: a gain of "
              f"at least {TRANSFER_MARGIN:g} points with its 95% CI above 0):", ""]  # fmt: skip
    lines += ["| recipe | framework | gain | 95% CI | real |", "|---|---|---|---|---|"]
    for key, g in summary["transfer"].items():
      recipe, fw = key.split("/")
      real = "yes" if g["real"] else ("n/a" if math.isnan(g["ci95"][0]) else "no")
      lines.append(f"| {recipe} | {LABELS[fw]} | {g['gain']:+.2f} | {_interval(g['ci95'])} | "
                   f"{real} |")  # fmt: skip
  lines += [
    "",
    "Seconds per run, means over seeds:",
    "",
    "| recipe | framework | steady epoch (training) | first epoch's extra (compile, "
    "start-up) | outside training (start-up, evaluation) | wall |",
    "|---|---|---|---|---|---|",
  ]
  for recipe, row in summary["recipes"].items():
    for fw, t in row["timing"].items():
      lines.append(
        f"| {recipe} | {LABELS[fw]} | {_num(t['steady_epoch_train_s'], '.1f')} | "
        f"{_num(t['first_epoch_extra_s'], '.1f')} | {t['outside_training_s']:.1f} | "
        f"{t['wall_s']:.1f} |"
      )
  return "\n".join(lines) + "\n"


def plot(runs: Sequence[dict], recipes: Sequence[str], path: pathlib.Path) -> None:
  """Test accuracy and loss per epoch, per recipe: each framework's mean with a ±1 std band."""
  fig, axes = plt.subplots(2, len(recipes), figsize=(4.5 * len(recipes), 7), squeeze=False)
  for column, recipe in enumerate(recipes):
    for row, (key, label, scale) in enumerate(
      [("test_accuracy", "test accuracy (%)", 100), ("test_loss", "test loss", 1)]
    ):
      ax = axes[row, column]
      for fw in FRAMEWORKS:
        values = scale * curves(runs, recipe, fw, key)
        epochs = np.arange(1, values.shape[1] + 1)
        mean = values.mean(axis=0)
        std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
        (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=LABELS[fw])
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
      ax.set_title(f"{recipe}: {label}")
      ax.set_xlabel("epoch")
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
      ax.grid(alpha=0.3)
      ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write(results: dict, output: pathlib.Path) -> str:
  """`results` (preset, meta, source, data, runs) with its summary as `RESULTS`, `SUMMARY` and
  `CURVES` in `output`; returns the summary's markdown."""
  recipes = [r["name"] for r in results["preset"]["recipes"]]
  results = results | {"summary": summarise(results["runs"], recipes)}
  table = markdown(results["summary"], results["preset"], results["meta"], results["source"])
  output.mkdir(parents=True, exist_ok=True)
  (output / RESULTS).write_text(json.dumps(results, indent=1, default=str))
  (output / SUMMARY).write_text(table)
  plot(results["runs"], recipes, output / CURVES)
  return table
