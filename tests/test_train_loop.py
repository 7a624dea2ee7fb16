"""The training loop end to end, on CPU and without a network.

- Learning: `configs/quick.py` through the CLI, from scratch on real CIFAR-10 JPEGs, beats chance
  (10%) by far on 2,000 real test images, and leaves its checkpoints, metrics and figures.
- A smoke test in process, on `tfds.testing.mock_data` (the `mock_run` fixture, conftest.py):
  the records, TensorBoard panels and console lines of a run.
- What a person sees: one line per log step and per epoch, no other library's INFO lines.
"""

import json
import re
import time

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from configs import quick
from jaxresnet import figures, optimizers
from jaxresnet.data import cifar10_jpeg
from tests import train_helpers as th

STEP_LINE = re.compile(
  r"step (\d+)/(\d+) \(epoch [\d.]+/\d+\) \| loss [\d.]+ \| accuracy [\d.]+% \| lr [\d.e-]+ \| "
  r"\d+ images/s \| ETA \d+m\d\ds$"
)
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) \| train loss [\d.]+, accuracy [\d.]+% \| (val .* \| )?"
                        r"test loss [\d.]+, accuracy [\d.]+% \| \d+m\d\ds$")  # fmt: skip


@pytest.mark.slow
def test_quick_config_learns_real_cifar10_from_scratch(cifar_root, tmp_path):
  workdir = tmp_path / "quick"
  start = time.perf_counter()
  result = th.run_train(workdir, cifar_root, {})
  wall = time.perf_counter() - start

  history = th.workdir_lib.read_history(workdir)
  epochs = [r for r in history if "test/accuracy" in r]
  config = quick.get_config()
  assert [r["epoch"] for r in epochs] == list(range(1, config.num_epochs + 1))
  final = epochs[-1]
  accuracy, loss = final["test/accuracy"], final["test/loss"]
  print(f"quick.py: test accuracy {accuracy:.4f}, loss {loss:.4f}, {wall:.0f} s end to end")
  # Chance is 10% (std 0.67 points on 2,000 images): 25% is far beyond luck.
  assert accuracy >= 0.25
  # Better than a uniform guess (ln 10 = 2.30): eval-mode BatchNorm statistics are usable.
  assert loss < np.log(10)
  train_losses = [loss for _, loss in th.series(workdir, "train_epoch/loss")]
  assert len(train_losses) == config.num_epochs and train_losses[-1] < train_losses[0]

  # What the run leaves in the workdir.
  num_train = int(re.fullmatch(r"train\[:(\d+)\]", config.train_split).group(1))
  steps_per_epoch = num_train // config.batch_size
  expected = [steps_per_epoch * (e + 1) for e in range(config.num_epochs)]
  assert th.checkpoint_steps(workdir) == expected
  train_steps = [step for step, _ in th.series(workdir, "train/loss")]
  assert train_steps == sorted(set(train_steps))
  assert train_steps[-1] == config.num_epochs * steps_per_epoch
  for name in ("curves.png", "curves_last10.png", "confusion_matrix.png"):
    with Image.open(workdir / name) as image:
      assert image.format == "PNG" and min(image.size) > 100, name
  table = (workdir / "per_class_accuracy.txt").read_text().split("\n\n")[0].splitlines()
  assert [line.split()[0] for line in table[1:]] == [*cifar10_jpeg.CLASSES, "overall"]
  assert table[-1].split()[-1] == str(10 * th.TEST_PER_CLASS)  # "... correct / 2000".
  overall = float(table[-1].split()[1].rstrip("%")) / 100
  assert overall == pytest.approx(accuracy, abs=5e-5)
  balanced = final["test/balanced_accuracy"]  # Equal to accuracy on balanced classes.
  assert balanced == pytest.approx(accuracy, abs=1e-6) and 0.5 < final["test/macro_auc"] <= 1
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["dataset"] == f"imagefolder:{cifar_root}" and saved["init_from"] == ""
  # The console: a line per log step (every 10) and per epoch.
  steps = [int(m.group(1)) for m in map(STEP_LINE.search, result.stderr.splitlines()) if m]
  assert steps == list(range(10, config.num_epochs * steps_per_epoch + 1, 10))


def test_smoke_in_process_on_mocked_tfds(mock_run):
  workdir, results, _, config = mock_run
  core = {"train_epoch/loss", "train_epoch/accuracy", "test/loss", "test/accuracy"}
  macro = {f"test/{k}" for k in ("balanced_accuracy", "macro_precision", "macro_recall",
                                 "macro_f1", "macro_auc")}  # fmt: skip
  # Per class: recall and F1 of the 9 classes the 24 mocked test images have, precision and AUC
  # where defined (a class never predicted has no precision; it is left out, never NaN).
  assert core | macro <= set(results)
  per_class = {k.split("/")[1] for k in set(results) - core - macro}
  assert per_class == {"precision", "recall", "f1", "auc"}
  assert all(np.isfinite(v) for v in results.values())
  for name in ("roc.png", "precision_recall.png"):
    with Image.open(workdir / name) as image:
      assert image.format == "PNG" and min(image.size) > 100, name
  assert th.checkpoint_steps(workdir) == [3, 6]
  records = th.workdir_lib.read_history(workdir)
  assert records[0] == {"step": 0, "num_params": 11_181_642}  # ResNet-18, 10 classes: once.
  steps = [r for r in records if "train/loss" in r]
  # Logged every 2 steps and at each epoch's end (where the loop also checks for NaN).
  assert [r["step"] for r in steps] == [2, 3, 4, 6]
  # The rate the step's update used: quick.py's cosine decay at the update's count (step - 1).
  schedule = optimizers.create_learning_rate(config, th.MOCK_STEPS_PER_EPOCH)
  for record in steps:
    assert record["lr"] == pytest.approx(float(schedule(record["step"] - 1)), rel=1e-6)
    assert record["train/images_per_sec"] > 0
  assert steps[0]["lr"] > steps[-1]["lr"] > 0
  assert [r["epoch"] for r in records if "test/accuracy" in r] == [1, 2]
  assert {"train/loss", "train/accuracy", "lr", "train_epoch/loss", "test/accuracy",
          "test/loss", "num_params"} <= th.event_tags(workdir)  # fmt: skip


def test_console_shows_one_line_per_log_step_and_epoch(mock_run):
  _, _, lines, _ = mock_run
  step_lines = [m for m in map(STEP_LINE.search, lines) if m]
  assert [int(m.group(1)) for m in step_lines] == [2, 3, 4, 6]
  assert {int(m.group(2)) for m in step_lines} == {6}
  epoch_lines = [m for m in map(EPOCH_LINE.search, lines) if m]
  assert [int(m.group(1)) for m in epoch_lines] == [1, 2]
  # Nothing else repeats the metrics (clu's LoggingWriter printed each record again).
  assert sum("loss" in line for line in lines) == len(step_lines) + len(epoch_lines)


@pytest.mark.slow  # The run is the resume test's reference.
def test_cli_logs_no_library_chatter(finished_tiny_run):
  """Only jaxresnet's INFO lines; TensorFlow's C++ INFO line would show it had been imported."""
  stderr = (finished_tiny_run.parent / "stderr.txt").read_text()
  info = [line for line in stderr.splitlines() if re.match(r"I\d{4} ", line)]
  assert info, stderr[-2000:]
  sources = {re.search(r" (\S+):\d+\]", line).group(1) for line in info}
  assert sources <= {"train.py", "reporting.py"}, sources


def test_figures_have_whole_epoch_ticks(monkeypatch, tmp_path):
  history = [
    {"step": 10 * e, "epoch": e, "train_epoch/loss": 1 / e, "test/loss": 2 / e,
     "train_epoch/accuracy": 0.1 * e, "test/accuracy": 0.05 * e}
    for e in (1, 2, 3)
  ]  # fmt: skip
  closed = []
  monkeypatch.setattr(plt, "close", closed.append)
  figures.plot_curves(history, tmp_path / "curves.png")
  (figure,) = closed
  for ax in figure.axes:
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks == [1, 2, 3], ticks
    assert {line.get_label() for line in ax.get_lines()} == {"train", "test"}
  plt.close(figure)
