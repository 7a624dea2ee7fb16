"""scripts/compare_torch.py and its modules: the harness end to end at toy scale, its statistics,
its presets, and torch_reference's body-only weights.

The end-to-end test runs the cpu preset's smoke command at toy scale: both frameworks for real
(torch_reference in a subprocess, jaxresnet in process) on a few real CIFAR-10 JPEGs, from a
source trained here, no network. Its sizes are far too small to say anything about accuracy; it
checks that every number reaches the JSON, the table and the figure.
"""

import hashlib
import json
import math
import time

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from scipy import stats

from configs import adam, sgd
from jaxresnet import errors, network
from scripts import (
  compare_merge,
  compare_presets,
  compare_report,
  compare_source,
  compare_stats,
  compare_torch,
  torch_reference,
)

TOY = {
  "train_per_class": 8, "test_per_class": 4, "epochs": 2, "seeds": 1, "batch_size": 8,
  "eval_batch_size": 20, "torch_workers": 0, "source_train_per_class": 8,
  "source_test_per_class": 4, "source_epochs": 1,
}  # fmt: skip


def toy_argv(preset: str, tmp_path, **changes) -> list[str]:
  fields = TOY | changes
  return [
    "--preset", preset, "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
    *(f"--set={k}={v}" for k, v in fields.items()),
  ]  # fmt: skip


def table_rows(markdown: str, header: str) -> dict[str, list[str]]:
  """The rows of the markdown table that starts with `header`, by their first cell."""
  lines = markdown.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(header))
  rows = {}
  for line in lines[start + 2 :]:
    if not line.startswith("|"):
      break
    cells = [c.strip() for c in line.split("|")[1:-1]]
    rows[cells[0]] = cells
  return rows


def check_outputs(out, recipes: list[str], epochs: int, seeds: int = 1) -> dict:
  """What every comparison writes: both frameworks' epochs of every seed, the table from them
  (intervals from 2 seeds on), the PNG."""
  results = json.loads((out / compare_report.RESULTS).read_text())
  for recipe in recipes:
    for framework in ("jaxresnet", "torch"):
      runs = [r for r in results["runs"] if (r["recipe"], r["framework"]) == (recipe, framework)]
      assert [r["seed"] for r in runs] == list(range(seeds))
      for run in runs:
        assert [e["epoch"] for e in run["epochs"]] == list(range(1, epochs + 1))
        for epoch in run["epochs"]:
          assert all(math.isfinite(epoch[k]) for k in ("train_loss", "test_loss"))
          assert all(0 <= epoch[k] <= 1 for k in ("train_accuracy", "test_accuracy"))
          assert epoch["train_seconds"] > 0
        assert run["wall_seconds"] > sum(e["train_seconds"] for e in run["epochs"])
      final = results["summary"]["recipes"][recipe]["final_test_accuracy"][framework]
      assert final == [100 * run["epochs"][-1]["test_accuracy"] for run in runs]
  rows = table_rows((out / compare_report.SUMMARY).read_text(), "| recipe | seeds |")
  assert list(rows) == recipes
  for recipe in recipes:
    finals = results["summary"]["recipes"][recipe]["final_test_accuracy"]
    means = [rows[recipe][i].split(" ± ")[0] for i in (2, 3)]  # jaxresnet, PyTorch.
    assert means == [f"{np.mean(finals[fw]):.2f}" for fw in ("jaxresnet", "torch")]
    if seeds == 1:
      assert rows[recipe][5:] == ["n/a"] * 3  # One seed: no interval.
    else:  # Welch's 95% and 90% intervals of the difference, and the TOST verdict.
      assert all(cell.startswith("[") for cell in rows[recipe][5:7]), rows[recipe]
      assert rows[recipe][7] != "n/a", rows[recipe]
  meta = results["meta"]
  assert meta["git_commit"] and meta["cpu"] and meta["torch"] == torch.__version__
  with Image.open(out / compare_report.CURVES) as image:
    assert image.format == "PNG" and image.width >= 400 * len(recipes)
  return results


def test_paper_preset_takes_a_local_checkpoint_as_its_source(tmp_path):
  """The paper preset's source path with a local resnet18 file in place of ImageNet's weights:
  its 1000-class fc dropped, named by path and sha256, written once to the cache. (The runs after
  the source are the cpu preset's, tested end to end below.)"""
  torch.manual_seed(0)
  full = torchvision.models.resnet18().state_dict()
  torch.save(full, tmp_path / "toy.pt")
  preset = compare_presets.resolve("paper", [f"source={tmp_path / 'toy.pt'}"])
  body_file, source = compare_source.source_body(preset, tmp_path / "cache")
  assert source["origin"] == str(tmp_path / "toy.pt")
  assert source["sha256"] == hashlib.sha256((tmp_path / "toy.pt").read_bytes()).hexdigest()
  body = torch.load(body_file, weights_only=True)
  assert sorted(body) == sorted(k for k in full if not k.startswith("fc."))
  assert all(torch.equal(body[k], full[k]) for k in body)
  written = body_file.stat().st_mtime_ns
  assert compare_source.source_body(preset, tmp_path / "cache")[0] == body_file
  assert body_file.stat().st_mtime_ns == written


@pytest.mark.slow
def test_cpu_preset_smoke_run_end_to_end(tmp_path):
  """The README's smoke run, `--preset cpu --set seeds=2 --recipes sgd`, at toy scale: the source
  trained here in PyTorch on the source classes (then cached), two seeds of both frameworks
  through `compare_torch.main`, the table with its intervals. It breaks if the training API the
  harness calls changes."""
  compare_torch.main([*toy_argv("cpu", tmp_path, seeds=2), "--recipes", "sgd"])
  results = check_outputs(tmp_path / "out", ["sgd"], epochs=2, seeds=2)
  assert results["preset"]["recipes"] == [
    {"name": "sgd", "optimizer": "sgd", "pretrained": True, "epochs": 0, "seeds": 0}
  ]
  assert results["summary"]["transfer"] == {}  # No scratch twin ran.
  source = results["source"]
  assert not source["cached"] and len(source["history"]) == 1 and source["wall_seconds"] > 0
  preset = compare_presets.resolve("cpu", [f"{k}={v}" for k, v in (TOY | {"seeds": 2}).items()])
  body_file, again = compare_source.source_body(preset, tmp_path / "cache")
  assert again["cached"] and again["history"] == source["history"]
  body = torch.load(body_file, weights_only=True)
  assert not any(k.startswith("fc.") for k in body) and "layer4.1.bn2.weight" in body


def _synthetic_run(recipe: str, framework: str, seed: int, finals: float) -> dict:
  epochs = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.2 / e, "train_accuracy": 0.5,
             "test_accuracy": (finals - 10 * (2 - e)) / 100, "train_seconds": 2.0 + (e == 1)}
            for e in (1, 2)]  # fmt: skip
  return {"recipe": recipe, "framework": framework, "seed": seed, "epochs": epochs,
          "wall_seconds": 9.0}  # fmt: skip


def test_transfer_is_fine_tuned_minus_scratch_per_framework_with_welch():
  """The transfer table on synthetic runs: gains of 12 and 1 points, 3 seeds each."""
  finals = {("sgd", "jaxresnet"): [80.0, 82.0, 81.0], ("sgd", "torch"): [70.0, 71.5, 70.5],
            ("scratch_sgd", "jaxresnet"): [69.0, 70.0, 68.0],
            ("scratch_sgd", "torch"): [69.0, 70.5, 69.5]}  # fmt: skip
  runs = [_synthetic_run(recipe, fw, seed, acc)
          for (recipe, fw), accs in finals.items() for seed, acc in enumerate(accs)]  # fmt: skip
  summary = compare_report.summarise(runs, ["sgd", "scratch_sgd"])
  for fw, real in (("jaxresnet", True), ("torch", False)):
    gain = summary["transfer"][f"sgd/{fw}"]
    a, b = finals[("sgd", fw)], finals[("scratch_sgd", fw)]
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert gain["gain"] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-9)
    assert gain["ci95"] == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert gain["real"] is real  # 12 points clear the 5-point margin; 1 does not.
  meta = {"git_commit": "0" * 40, "git_dirty": False, "date": "today", "cpu": "cpu",
          "cpu_cores_usable": 2, "jax_device": "cpu", "jax": "j", "flax": "f", "torch": "t",
          "torchvision": "tv"}  # fmt: skip
  recipes = [{"name": "sgd", "epochs": 0}, {"name": "scratch_sgd", "epochs": 3}]
  preset = {"name": "toy", "classes": ["a", "b"], "train_per_class": 1, "test_per_class": 1,
            "image_size": 32, "epochs": 2, "batch_size": 2, "recipes": recipes}  # fmt: skip
  table = compare_report.markdown(summary, preset, meta, {"origin": "here"})
  assert "32x32, 2 epochs of batch 2; scratch_sgd: 3 epochs." in table  # Its own epochs.
  rows = table.split("| recipe | framework | gain")[1].splitlines()[2:4]
  cells = [[c.strip() for c in row.split("|")[1:6]] for row in rows]
  jax_gain, torch_gain = (summary["transfer"][f"sgd/{fw}"] for fw in ("jaxresnet", "torch"))
  assert cells[0][:3] == ["sgd", "jaxresnet", f"{jax_gain['gain']:+.2f}"] and cells[0][4] == "yes"
  assert cells[1][:3] == ["sgd", "PyTorch", f"{torch_gain['gain']:+.2f}"] and cells[1][4] == "no"


def _synthetic_results(seeds: range, epochs: int = 2) -> dict:
  """compare_torch's results for `seeds` of one adam recipe (finals 60 + seed, PyTorch's 0.5
  below), with a source trained here."""
  runs = [_synthetic_run("adam", fw, seed, 60.0 + seed - 0.5 * (fw == "torch"))
          for seed in seeds for fw in ("jaxresnet", "torch")]  # fmt: skip
  recipes = [{"name": "adam", "optimizer": "adam", "pretrained": True, "epochs": 0,
              "seeds": len(seeds)}]  # fmt: skip
  preset = {"name": "toy", "classes": ["a", "b"], "train_per_class": 1, "test_per_class": 1,
            "image_size": 32, "epochs": epochs, "batch_size": 2, "seeds": len(seeds),
            "first_seed": seeds.start, "recipes": recipes}  # fmt: skip
  meta = {"git_commit": str(seeds.start) * 40, "git_dirty": False, "date": f"day {seeds.start}",
          "cpu": "cpu", "cpu_cores_usable": 2, "jax_device": "cpu", "jax": "j", "flax": "f",
          "torch": "t", "torchvision": "tv"}  # fmt: skip
  source = {
    "origin": "here",
    "wall_seconds": 5.0 + seeds.start,
    "cached": bool(seeds.start),
    "history": [{"epoch": 1, "test": {"accuracy": 0.7, "seconds": 1.0 + seeds.start}}],
  }
  return {"preset": preset, "meta": meta, "source": source, "data": "d", "runs": runs}


def test_merge_gives_the_report_of_all_seeds_and_refuses_another_experiment(tmp_path):
  """Seeds 0-2 and 3-4 run apart (the source's timing differs, as when cached) merge into the
  report of seeds 0-4; a seed run twice, other epochs or another source are refused."""
  for name, seeds in (("a", range(3)), ("b", range(3, 5))):
    (tmp_path / name).mkdir()
    (tmp_path / name / compare_report.RESULTS).write_text(json.dumps(_synthetic_results(seeds)))
  compare_merge.main(["--output", str(tmp_path / "m"), str(tmp_path / "a"), str(tmp_path / "b")])
  merged = json.loads((tmp_path / "m" / compare_report.RESULTS).read_text())
  finals = merged["summary"]["recipes"]["adam"]["final_test_accuracy"]
  assert finals["jaxresnet"] == pytest.approx([60.0, 61.0, 62.0, 63.0, 64.0])
  assert finals["torch"] == pytest.approx([59.5, 60.5, 61.5, 62.5, 63.5])
  assert merged["preset"]["recipes"][0]["seeds"] == 5 and merged["preset"]["first_seed"] == 0
  table = (tmp_path / "m" / compare_report.SUMMARY).read_text()
  assert table_rows(table, "| recipe | seeds |")["adam"][1] == "5 / 5"
  assert f"Merged with the seeds adam 3-4 of git {'3' * 10}, day 3 (cpu)." in table
  assert (tmp_path / "m" / compare_report.CURVES).is_file()

  twice = [_synthetic_results(range(3)), _synthetic_results(range(2, 4))]
  with pytest.raises(errors.UserError, match="jaxresnet adam seed 2 is in two outputs"):
    compare_merge.merge(twice)
  with pytest.raises(errors.UserError, match=r"not one experiment \(they differ in \[.epochs.\]\)"):
    compare_merge.merge([_synthetic_results(range(3)), _synthetic_results(range(3, 5), 3)])
  other_source = _synthetic_results(range(3, 5))
  other_source["source"]["history"][0]["test"]["accuracy"] = 0.71
  with pytest.raises(errors.UserError, match=r"not one experiment \(they differ in \[.source.\]\)"):
    compare_merge.merge([_synthetic_results(range(3)), other_source])
  with pytest.raises(errors.UserError, match="Cannot read .*results.json"):
    compare_merge.read(tmp_path / "missing" / compare_report.RESULTS)


def test_paper_preset_refuses_a_source_of_another_architecture(tmp_path):
  torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pt")
  preset = compare_presets.resolve("paper", [f"source={tmp_path / 'r34.pt'}"])
  with pytest.raises(errors.UserError, match="not a torchvision resnet18 state dict .*resnet34"):
    compare_source.source_body(preset, tmp_path / "cache")
  assert not (tmp_path / "cache").exists()  # Refused before anything is written.


def test_paper_preset_offline_fails_fast_before_any_run(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
  monkeypatch.setattr(network, "can_reach", lambda host, port: False)
  start = time.monotonic()
  with pytest.raises(errors.NoNetwork, match="resnet18-f37072fd.pth"):
    compare_torch.main(["--preset", "paper", "--output", str(tmp_path / "out"),
                        "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
  assert time.monotonic() - start < 5
  assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_welch_equals_scipy_and_tost_is_the_90_percent_ci():
  a, b = [91.2, 92.5, 90.8, 91.9], [90.1, 91.0, 92.2]
  c = compare_stats.welch(a, b)
  reference = stats.ttest_ind(a, b, equal_var=False)
  assert c.p_value == pytest.approx(reference.pvalue, rel=1e-12)
  assert c.df == pytest.approx(reference.df, rel=1e-12)
  ci = reference.confidence_interval(0.95)
  assert c.ci95 == pytest.approx((ci.low, ci.high), rel=1e-12)
  assert c.std_a == pytest.approx(np.std(a, ddof=1))
  # TOST at 0.05 rejects both one-sided nulls exactly when the 90% CI is inside the margin.
  for margin in np.linspace(0.5, 4, 50):
    m = compare_stats.welch(a, b, margin)
    assert m.equivalent == (-margin < m.ci90[0] and m.ci90[1] < margin)
  one = compare_stats.welch([90.0], [91.0, 92.0])
  assert one.diff == -1.5 and math.isnan(one.ci95[0]) and math.isnan(one.std_a)


def test_bonferroni_counts_every_epoch_of_every_recipe():
  same = [[0.5, 0.6, 0.7], [0.52, 0.61, 0.69], [0.49, 0.6, 0.71]]
  apart = [[0.5, 0.6, 0.9], [0.51, 0.61, 0.91], [0.5, 0.59, 0.9]]
  level, separated = compare_stats.separated_epochs({"sgd": (same, apart), "adam": (same, same)})
  assert level == pytest.approx(0.05 / 6)
  assert [(s["recipe"], s["epoch"]) for s in separated] == [("sgd", 3)]


def test_presets_use_the_paper_recipes_in_both_frameworks():
  for name, config in (("sgd", sgd.get_config()), ("adam", adam.get_config())):
    torch_values = torch_reference.PAPER_OPTIMIZERS[name]
    assert (config.learning_rate, config.weight_decay) == (
      torch_values["lr"], torch_values["weight_decay"]
    )  # fmt: skip
  assert sgd.get_config().momentum == torch_reference.PAPER_OPTIMIZERS["sgd"]["momentum"]
  cpu = compare_presets.PRESETS["cpu"]
  assert not set(cpu.classes) & set(cpu.source_classes)  # Fine-tuning on classes new to it.
  preset = compare_presets.resolve("cpu", ["seeds=2", "classes=dog,cat"], "scratch_sgd")
  assert (preset.seeds, preset.classes, preset.recipes) == (
    2,
    ("dog", "cat"),
    (compare_presets.SCRATCH_SGD,),
  )
  with pytest.raises(errors.UserError, match="Cannot set 'lr'"):
    compare_presets.resolve("cpu", ["lr=0.1"])
  # A recipe's own epochs and seeds (the cpu preset's Adam), and --set overriding them.
  cpu_adam = compare_presets.resolve("cpu", [], "adam")
  (adam_recipe,) = cpu_adam.recipes
  assert (cpu_adam.epochs_of(adam_recipe), cpu_adam.seeds_of(adam_recipe)) == (10, range(18))
  assert (cpu_adam.epochs, cpu_adam.seeds) == (5, 8)
  toy = compare_presets.resolve("cpu", ["epochs=2", "seeds=1"])
  assert {(toy.epochs_of(r), toy.seeds_of(r)) for r in toy.recipes} == {(2, range(1))}
  # More seeds later: first_seed continues where an earlier run stopped.
  more = compare_presets.resolve("cpu", ["first_seed=14", "seeds=3"], "adam")
  assert list(more.seeds_of(more.recipes[0])) == [14, 15, 16]


def test_torch_reference_takes_a_body_only_state_dict(tmp_path):
  """The file's fc is never used: a body-only file gives the same model, RNG draws included."""
  source = torchvision.models.resnet18()
  torch.save(source.state_dict(), tmp_path / "full.pt")
  body = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
  torch.save(body, tmp_path / "body.pt")
  models = []
  for file in ("full.pt", "body.pt"):
    torch.manual_seed(5)
    models.append(torch_reference.create_model(3, str(tmp_path / file)).state_dict())
  assert models[0].keys() == models[1].keys() == source.state_dict().keys()
  for key, value in models[1].items():
    expected = body[key] if key in body else models[0][key]
    assert torch.equal(value, expected), key
  assert models[1]["fc.weight"].shape == (3, 512)


def test_torch_reference_names_another_architecture(tmp_path):
  torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pt")
  message = r"(?s)not a torchvision resnet18 state dict\. It looks like a resnet34.*Unexpected key"
  with pytest.raises(ValueError, match=message):
    torch_reference.create_model(10, str(tmp_path / "r34.pt"))
