"""scripts/compare_torch.py and its modules: the harness end to end at toy scale, its statistics,
its presets, and torch_reference's body-only weights.

The end-to-end tests run both frameworks for real (torch_reference in a subprocess, jaxresnet in
process) on a few real CIFAR-10 JPEGs, with a source trained here or a local checkpoint: no
network. Their sizes are far too small to say anything about accuracy; they check that every
number reaches the JSON, the table and the figure.
"""

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
from scripts import compare_presets, compare_source, compare_stats, compare_torch, torch_reference

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


def check_outputs(out, recipes: list[str], epochs: int) -> dict:
  """What every comparison writes: both frameworks' epochs, the table from them, the PNG."""
  results = json.loads((out / compare_torch.RESULTS).read_text())
  for recipe in recipes:
    for framework in ("jaxresnet", "torch"):
      (run,) = [r for r in results["runs"] if (r["recipe"], r["framework"]) == (recipe, framework)]
      assert [e["epoch"] for e in run["epochs"]] == list(range(1, epochs + 1))
      for epoch in run["epochs"]:
        assert all(math.isfinite(epoch[k]) for k in ("train_loss", "test_loss"))
        assert all(0 <= epoch[k] <= 1 for k in ("train_accuracy", "test_accuracy"))
        assert epoch["train_seconds"] > 0
      assert run["wall_seconds"] > sum(e["train_seconds"] for e in run["epochs"])
      final = results["summary"]["recipes"][recipe]["final_test_accuracy"][framework]
      assert final == [100 * run["epochs"][-1]["test_accuracy"]]
  rows = table_rows((out / compare_torch.SUMMARY).read_text(), "| recipe | seeds |")
  assert list(rows) == recipes
  for recipe in recipes:
    finals = results["summary"]["recipes"][recipe]["final_test_accuracy"]
    means = [rows[recipe][i].split(" ± ")[0] for i in (2, 3)]  # jaxresnet, PyTorch.
    assert means == [f"{np.mean(finals[fw]):.2f}" for fw in ("jaxresnet", "torch")]
    assert rows[recipe][5:] == ["n/a"] * 3  # One seed: no interval.
  meta = results["meta"]
  assert meta["git_commit"] and meta["cpu"] and meta["torch"] == torch.__version__
  with Image.open(out / compare_torch.CURVES) as image:
    assert image.format == "PNG" and image.width >= 400 * len(recipes)
  return results


@pytest.mark.slow
def test_cpu_preset_end_to_end_at_toy_scale(tmp_path):
  """The cpu preset's path: a source trained here in PyTorch, then both frameworks."""
  compare_torch.main([*toy_argv("cpu", tmp_path), "--recipes", "sgd,scratch_sgd"])
  results = check_outputs(tmp_path / "out", ["sgd", "scratch_sgd"], epochs=2)
  finals = {
    r: results["summary"]["recipes"][r]["final_test_accuracy"] for r in ("sgd", "scratch_sgd")
  }
  for fw in ("jaxresnet", "torch"):  # The transfer check: fine-tuned minus scratch, per framework.
    gain = results["summary"]["transfer"][f"sgd/{fw}"]["gain"]
    assert gain == pytest.approx(np.mean(finals["sgd"][fw]) - np.mean(finals["scratch_sgd"][fw]))
  table = (
    (tmp_path / "out" / compare_torch.SUMMARY).read_text().split("| recipe | framework | gain")
  )
  transfer_rows = [line.split("|")[1:4] for line in table[1].splitlines()[2:4]]
  assert [[c.strip() for c in row] for row in transfer_rows] == [
    ["sgd", "jaxresnet", f"{results['summary']['transfer']['sgd/jaxresnet']['gain']:+.2f}"],
    ["sgd", "PyTorch", f"{results['summary']['transfer']['sgd/torch']['gain']:+.2f}"],
  ]
  source = results["source"]
  assert not source["cached"] and len(source["history"]) == 1
  preset = compare_presets.resolve("cpu", [f"{k}={v}" for k, v in TOY.items()])
  body_file, again = compare_source.source_body(preset, tmp_path / "cache")
  assert again["cached"] and again["history"] == source["history"]  # Trained once.
  assert not any(k.startswith("fc.") for k in torch.load(body_file, weights_only=True))


@pytest.mark.slow
def test_paper_preset_with_a_local_checkpoint(tmp_path):
  """The paper preset's path with a local resnet18 (its 1000-class fc dropped) for ImageNet's."""
  torch.manual_seed(0)
  torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "toy.pt")
  changes = {"source": tmp_path / "toy.pt", "classes": "dog,frog", "epochs": 1, "image_size": 32}
  compare_torch.main([*toy_argv("paper", tmp_path, **changes), "--recipes", "sgd"])
  results = check_outputs(tmp_path / "out", ["sgd"], epochs=1)
  assert results["source"]["origin"] == str(tmp_path / "toy.pt")
  assert results["preset"]["recipes"] == [{"name": "sgd", "optimizer": "sgd", "pretrained": True}]


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
