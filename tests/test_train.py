"""The training loop end to end, on CPU and without a network.

- Learning: `configs/quick.py` through the CLI, from scratch on real CIFAR-10 JPEGs, beats chance
  (10%) by far on 2,000 real test images.
- Parallelism: the jitted train step on 4 (forced host) devices matches 1 device.
- Resume: a run killed with SIGKILL mid-epoch and relaunched ends bit-identical to one that was
  never interrupted.
- Converted weights: before any training, the eval step predicts what torchvision predicts.
- Errors: bad config values fail naming the field and the fix, and overwrite nothing; divergence
  stops the run with the step range and keeps the last good checkpoint.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torchvision
from PIL import Image

from configs import quick, sgd
from convert import flax_to_torch, torch_to_flax
from jaxresnet import (
  evaluate,
  input_pipeline,
  models,
  optimizers,
  parallel,
  predict,
  preprocess,
  reporting,
  steps,
  train,
)
from tests import torch_utils

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The real data: the quick config reads train[:2560]; the test split has 2,000 images, on which
# the standard deviation of a measured accuracy is at most 1.1 points (0.67 at chance, 10%).
TRAIN_PER_CLASS, TEST_PER_CLASS = 300, 200

# A tiny run for the resume and error tests: 20 steps of 8 images per epoch, 2 epochs, a
# checkpoint every 5 steps, train metrics logged (and checked for NaN) at every step. SGD with
# momentum (the paper's optimizer) and quick.py's warmup + cosine schedule, whose step count is
# part of the state.
TINY = {
  "optimizer": "sgd",
  "learning_rate": 0.01,
  "train_split": "train[:160]",
  "eval_split": "test[:100]",
  "source_image_size": 16,
  "image_size": 32,
  "batch_size": 8,
  "eval_batch_size": 100,
  "num_epochs": 2,
  "checkpoint_every_steps": 5,
  "log_every_steps": 1,
}
TINY_STEPS = 40


@pytest.fixture(scope="module")
def cifar_root(cifar_jpeg_root) -> pathlib.Path:
  return cifar_jpeg_root(TRAIN_PER_CLASS, TEST_PER_CLASS)


def _flags(root: pathlib.Path, overrides: dict) -> list[str]:
  values = {"dataset": f"imagefolder:{root}", **overrides}
  return [f"--config.{k}={v}" for k, v in values.items()]


def _train_command(workdir: pathlib.Path, root: pathlib.Path, overrides: dict) -> list[str]:
  """`python -m jaxresnet.train` with configs/quick.py and `overrides` as --config flags."""
  return [
    sys.executable, "-m", "jaxresnet.train", "--config", "configs/quick.py",
    "--workdir", str(workdir), *_flags(root, overrides),
  ]  # fmt: skip


def _run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs `command` in the repository root, bounded in time, capturing its output."""
  return subprocess.run(
    command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
  )


def _four_cpu_devices() -> dict[str, str]:
  """The environment of a child process that sees 4 CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
  return env


def _run_train(
  workdir: pathlib.Path, root: pathlib.Path, overrides: dict
) -> subprocess.CompletedProcess:
  result = _run(_train_command(workdir, root, overrides))
  assert result.returncode == 0, result.stderr[-5000:]
  return result


def _quick_config(root: pathlib.Path, **overrides) -> ml_collections.ConfigDict:
  """configs/quick.py as the CLI builds it from the same overrides, for in-process runs."""
  config = quick.get_config()
  config.update({"dataset": f"imagefolder:{root}", **overrides})
  return config


def _history(workdir: pathlib.Path) -> list[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines if line.strip()]


def _series(history: list[dict], key: str) -> list[tuple[int, float]]:
  return [(r["step"], r[key]) for r in history if key in r]


def _event_tags(workdir: pathlib.Path) -> set[str]:
  """Scalar tags written to the workdir's TensorBoard event files."""
  # Imported here, not above, where isort would put it before torchvision (see conftest.py).
  import tensorflow as tf
  from tensorflow.core.util import event_pb2

  files = sorted(workdir.glob("events.out.tfevents.*"))
  assert files, "no TensorBoard event file"
  tags = set()
  for record in tf.data.TFRecordDataset([str(f) for f in files]):
    tags |= {value.tag for value in event_pb2.Event.FromString(record.numpy()).summary.value}
  return tags


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  """Finished checkpoints only: Orbax writes into `<step>.orbax-checkpoint-tmp*` and renames."""
  directory = workdir / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _restore(workdir: pathlib.Path, step: int | None = None) -> tuple[int, dict]:
  """(step, whole TrainState as a dict of arrays) of a checkpoint, by default the latest."""
  options = ocp.CheckpointManagerOptions(read_only=True)
  manager = ocp.CheckpointManager(
    workdir / "checkpoints", options=options, item_names=("state", "model")
  )
  step = manager.latest_step() if step is None else step
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  manager.close()
  return step, jax.device_get(state)


def _snapshot(directory: pathlib.Path) -> dict[str, tuple[str, int]]:
  """Every file under `directory`: sha256 of its bytes and its mtime."""
  return {
    str(path.relative_to(directory)): (
      hashlib.sha256(path.read_bytes()).hexdigest(),
      path.stat().st_mtime_ns,
    )
    for path in sorted(directory.rglob("*"))
    if path.is_file()
  }


# a. Learning on real data.


@pytest.mark.slow
def test_quick_config_learns_real_cifar10_from_scratch(cifar_root, tmp_path):
  workdir = tmp_path / "quick"
  start = time.perf_counter()
  _run_train(workdir, cifar_root, {})
  wall = time.perf_counter() - start

  history = _history(workdir)
  epochs = [r for r in history if "test_epoch_accuracy" in r]
  config = quick.get_config()
  assert [r["epoch"] for r in epochs] == list(range(1, config.num_epochs + 1))
  final = epochs[-1]
  accuracy, loss = final["test_epoch_accuracy"], final["test_epoch_loss"]
  print(f"quick.py: test accuracy {accuracy:.4f}, loss {loss:.4f}, {wall:.0f} s end to end")
  # Chance is 10% (std 0.67 points on 2,000 images): 25% is far beyond luck.
  assert final["test_epoch_accuracy"] >= 0.25
  # Better than a uniform guess (ln 10 = 2.30): eval-mode BatchNorm statistics are usable.
  assert final["test_epoch_loss"] < np.log(10)
  assert epochs[-1]["train_epoch_loss"] < epochs[0]["train_epoch_loss"]

  # What the run leaves in the workdir.
  num_train = int(re.fullmatch(r"train\[:(\d+)\]", config.train_split).group(1))
  steps_per_epoch = num_train // config.batch_size
  assert _checkpoint_steps(workdir) == [steps_per_epoch * (e + 1) for e in range(config.num_epochs)]
  train_steps = [step for step, _ in _series(history, "train_loss")]
  assert train_steps == sorted(set(train_steps))
  assert train_steps[-1] == config.num_epochs * steps_per_epoch
  for name in ("curves.png", "curves_last10.png", "confusion_matrix.png"):
    with Image.open(workdir / name) as image:
      assert image.format == "PNG" and min(image.size) > 100, name
  table = (workdir / "per_class_accuracy.txt").read_text().splitlines()
  assert [line.split()[0] for line in table[1:]] == [*CLASSES, "overall"]
  assert table[-1].split()[-1] == str(10 * TEST_PER_CLASS)  # "... correct / 2000".
  overall = float(table[-1].split()[1].rstrip("%")) / 100
  assert overall == pytest.approx(final["test_epoch_accuracy"], abs=5e-5)
  assert {"train_loss", "test_epoch_accuracy", "test_epoch_loss"} <= _event_tags(workdir)
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["dataset"] == f"imagefolder:{cifar_root}" and saved["init_from"] == ""


# b. Several devices compute what one does.


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_train_steps_on_4_devices_match_1_device(dtype):
  """3 steps of the paper's SGD recipe, global batch 8, on a 4-device mesh vs a 1-device one.

  float64 shows they compute the same function: the only difference is the order of the
  reductions (BatchNorm statistics and gradients summed per device, then across devices), worth
  ~1e-16 per operation. float32: the same reordering, amplified by the backward pass through
  BatchNorm over 8 examples, measured at <= 2e-4 of each tensor's update; float32 itself is off
  from float64 by up to 2e-3 of the update on one device, so 1e-3 is within float32's own error.
  """
  env = dict(_four_cpu_devices(), JAX_ENABLE_X64=str(int(dtype == "float64")))
  result = _run([sys.executable, "-m", "tests.mesh_parity", dtype], env)
  assert result.returncode == 0, result.stderr[-5000:]
  report = json.loads(result.stdout)
  assert report["devices"] == 4
  assert report["dtypes"] == [dtype]  # Parameters, statistics and (checked there) the loss.
  tensors = report["tensors"]
  assert len(tensors) == 102  # ResNet-18: 62 parameters, mean and var of 20 BatchNorms.
  worst = {}
  for name, t in tensors.items():
    assert t["update"] > 0, name  # Every tensor moved, so the comparison means something.
    worst[name] = t["diff"] / t["update"]
  name = max(worst, key=worst.get)
  print(f"{dtype}: max ||p4 - p1|| / ||p1 - p0|| = {worst[name]:.2e} ({name})")
  if dtype == "float64":
    for name, t in tensors.items():
      assert t["diff"] <= 1e-10 * t["norm"], (name, t)
      assert t["diff"] <= 1e-10 * t["update"], (name, t)
  else:
    for name, t in tensors.items():
      assert t["diff"] <= 1e-3 * t["update"], (name, t)


# c. Resuming after SIGKILL.


@pytest.fixture(scope="module")
def finished_tiny_run(cifar_root, tmp_path_factory) -> pathlib.Path:
  """A finished, never interrupted TINY run of resnet18 (also the reference for resume)."""
  workdir = tmp_path_factory.mktemp("tiny") / "reference"
  _run_train(workdir, cifar_root, TINY)
  return workdir


@pytest.mark.slow
def test_sigkill_mid_epoch_then_relaunch_is_bit_identical(finished_tiny_run, cifar_root, tmp_path):
  workdir = tmp_path / "killed"
  command = _train_command(workdir, cifar_root, TINY)
  log = tmp_path / "killed.log"  # A file, not a pipe: a full pipe would stall the run.
  with open(log, "w") as output:
    process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + 600
  while not _checkpoint_steps(workdir) and process.poll() is None:
    assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, log.read_text()[-5000:]
  at_kill = _checkpoint_steps(workdir)
  # Killed after its first checkpoint (at step 5, mid-epoch; the poll takes 50 ms, a step 250).
  assert at_kill and at_kill[-1] < TINY_STEPS, at_kill

  resumed = _run_train(workdir, cifar_root, TINY)
  assert f"Resuming from {workdir.absolute() / 'checkpoints'}, step {at_kill[-1]}" in (
    resumed.stderr
  )

  reference_step, reference = _restore(finished_tiny_run)
  step, state = _restore(workdir)
  assert step == reference_step == TINY_STEPS
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(reference)]
  for path, a, b in zip(paths, jax.tree.leaves(reference), jax.tree.leaves(state), strict=True):
    assert a.dtype == b.dtype and np.array_equal(a, b), path

  # Each step is logged once, and exactly as the uninterrupted run logged it.
  history = _history(workdir)
  losses = _series(history, "train_loss")
  assert [step for step, _ in losses] == list(range(1, TINY_STEPS + 1))
  assert losses == _series(_history(finished_tiny_run), "train_loss")
  for key in ("test_epoch_accuracy", "test_epoch_loss"):
    assert _series(history, key) == _series(_history(finished_tiny_run), key)


# d. Converted weights predict what torchvision predicts.


def test_converted_weights_predict_like_torchvision_before_training(
  cifar_root, tmp_path, exact_matmuls
):
  """300 real test images, 32x32 resized to 64 (224, the paper's size, costs 12x more here)."""
  num_images, image_size = 300, 64
  source = torch_utils.randomized_torchvision("resnet18")  # 1000 classes.
  torch_utils.convert_with_cli(source, tmp_path, "resnet18", "--num-classes", "10")
  converted = tmp_path / "resnet18-flax"  # Where convert_with_cli writes.
  # torch with the fresh 10-class head the converter drew (torch's nn.Linear init, seed 0).
  torch_model = torchvision.models.resnet18(num_classes=10).eval()
  torch_model.load_state_dict(torch_to_flax.with_head(source.state_dict(), "resnet18", 10, 0))

  # The training code path: the paper's config, weights from init_from, the jitted eval step.
  config = sgd.get_config()
  config.update(
    dataset=f"imagefolder:{cifar_root}", image_size=image_size, init_from=str(converted),
    eval_batch_size=num_images,
  )  # fmt: skip
  batch = next(input_pipeline.eval_batches(config, f"test[:{num_images}]"))
  assert batch["mask"].all() and len(batch["image"]) == num_images
  model = models.create_model(config.model, 10)
  variables = train.initial_variables(config, model, 10, jax.random.key(0))
  state = steps.create_train_state(model, variables, optimizers.create_optimizer(config, 1))

  # torch gets its own transforms of the same decoded pixels, which equal what our step sees.
  transform = torchvision.transforms.Compose(
    [
      torchvision.transforms.Resize(image_size),
      torchvision.transforms.ToTensor(),
      torchvision.transforms.Normalize(config.mean, config.std),
    ]
  )
  images = torch.stack([transform(Image.fromarray(image)) for image in batch["image"]])
  ours = np.asarray(preprocess.preprocess(batch["image"], config))
  np.testing.assert_allclose(torch_utils.to_nhwc(images), ours, rtol=0, atol=1e-6)
  with torch.no_grad():
    torch_logits = torch_model(images)
  torch_top1 = torch_logits.argmax(-1)

  # Labelled with torch's predictions, the eval step's accuracy is the top-1 agreement, and its
  # loss is torch's cross-entropy of its own logits against them.
  eval_step = parallel.jit_eval_step(config, parallel.create_mesh())
  labelled = {**batch, "label": torch_top1.numpy().astype(np.int32)}
  computed = jax.device_get(eval_step(state, labelled).compute())
  torch_loss = float(torch.nn.functional.cross_entropy(torch_logits, torch_top1))
  print(f"top-1 agreement {computed['accuracy']:.4f}; mean cross-entropy {computed['loss']:.6f} "
        f"(torch {torch_loss:.6f})")  # fmt: skip
  assert computed["accuracy"] >= 0.995
  assert computed["loss"] == pytest.approx(torch_loss, rel=1e-4)


# e. Bad values fail clearly and overwrite nothing.


@pytest.mark.parametrize(
  "overrides, error, words",
  [
    ({"optimizer": "rmsprop"}, ValueError, ["config.optimizer='rmsprop'", "'adam', 'sgd'"]),
    ({"model": "resnet101"}, ValueError, ["config.model='resnet101'", "'resnet18'"]),
    ({"dataset": "mnist"}, ValueError, ["config.dataset = 'mnist'", "imagefolder:PATH"]),
    ({"batch_size": 0}, ValueError, ["config.batch_size must be positive"]),
    (
      {"init_from": "/nonexistent/weights"},
      FileNotFoundError,
      ["config.init_from='/nonexistent/weights'", "convert.torch_to_flax", "init_from=''"],
    ),
  ],
)
def test_bad_config_value_fails_naming_field_and_fix(cifar_root, tmp_path, overrides, error, words):
  workdir = tmp_path / "run"
  config = _quick_config(cifar_root, **overrides)
  with pytest.raises(error) as raised:
    train.train_and_evaluate(config, str(workdir))
  for word in words:
    assert word in str(raised.value)
  assert not workdir.exists()


def test_batch_size_not_divisible_by_devices_fails_before_writing(cifar_root, tmp_path):
  workdir = tmp_path / "run"
  result = _run(_train_command(workdir, cifar_root, {"batch_size": 30}), _four_cpu_devices())
  assert result.returncode != 0
  assert "config.batch_size=30 is not divisible by the 4 devices" in result.stderr
  assert "use a multiple of 4 (e.g. 28)" in result.stderr
  assert not workdir.exists()


def test_workdir_of_another_model_is_refused_untouched(finished_tiny_run, cifar_root):
  before = _snapshot(finished_tiny_run)
  config = _quick_config(cifar_root, **TINY, model="resnet34")
  with pytest.raises(ValueError) as raised:
    train.train_and_evaluate(config, str(finished_tiny_run))
  message = str(raised.value)
  assert "model: checkpoint 'resnet18' vs config 'resnet34'" in message
  assert "Use a new --workdir" in message and "nothing was overwritten" in message
  assert _snapshot(finished_tiny_run) == before


@pytest.mark.slow
def test_divergence_stops_with_step_range_and_keeps_good_checkpoints(
  finished_tiny_run, cifar_root, tmp_path
):
  """Resumes the finished run for a third epoch at lr 1e6, logging every 10 steps as quick.py.

  The state turns NaN at step 43 here. The loop must notice by the mid-epoch checkpoint at step
  45 (before saving it), not wait for the log at step 50.
  """
  workdir = tmp_path / "diverged"
  shutil.copytree(finished_tiny_run, workdir)
  checkpoints = _snapshot(workdir / "checkpoints")
  overrides = {**TINY, "num_epochs": 3, "learning_rate": 1e6, "log_every_steps": 10}
  with pytest.raises(FloatingPointError) as raised:
    train.train_and_evaluate(_quick_config(cifar_root, **overrides), str(workdir))
  message = str(raised.value)
  print(message)
  first, last = map(int, re.search(r"diverged between steps (\d+) and (\d+)", message).groups())
  # A window between two checks: a checkpoint step (every 5), or the run's first step.
  assert first > TINY_STEPS and last - first == 4 and last % 5 == 0, message
  assert "lower config.learning_rate" in message
  # Nothing non-finite was saved, and the last epoch's checkpoint is untouched.
  for step in _checkpoint_steps(workdir):
    assert step < last
    _, state = _restore(workdir, step)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state)), step
  after = _snapshot(workdir / "checkpoints")
  last_good = {k: v for k, v in checkpoints.items() if k.startswith(f"{TINY_STEPS}/")}
  assert last_good and all(after.get(k) == v for k, v in last_good.items())
  assert all(after[k] == v for k, v in checkpoints.items() if k in after)


# Companion CLIs on a finished run.


def test_evaluate_predict_and_export_agree_with_training(finished_tiny_run, cifar_root, tmp_path):
  """evaluate reproduces the last epoch's test accuracy; the model exported to torchvision
  predicts what `predict` predicts, on real test images."""
  result = evaluate.evaluate_checkpoint(finished_tiny_run, "latest", None)
  last = reporting.last_epoch_results(finished_tiny_run)
  assert result["step"] == TINY_STEPS
  assert float(result["accuracy"]) == pytest.approx(last["test_epoch_accuracy"], abs=1e-6)
  config = evaluate.load_config(finished_tiny_run)
  num_eval = input_pipeline.get_info(config).num_eval
  assert int(np.asarray(result["confusion_matrix"]).sum()) == num_eval  # Each image once.

  images = sorted((cifar_root / "test").glob("*/000[0-2].jpg"))
  predictions = predict.predict(finished_tiny_run, images)
  exported = tmp_path / "model.pt"
  flax_to_torch.main(["--input", str(finished_tiny_run), "--output", str(exported)])
  torch_model = torchvision.models.resnet18(num_classes=10)
  torch_model.load_state_dict(torch.load(exported, weights_only=True))
  counters = [v for k, v in torch_model.state_dict().items() if k.endswith("num_batches_tracked")]
  assert all(int(c) == TINY_STEPS for c in counters)  # A scratch run: 0 + one per step.
  pixels = np.stack([predict.load_image(p, config.source_image_size) for p in images])
  inputs = np.asarray(preprocess.preprocess(jax.numpy.asarray(pixels), config))
  with torch.no_grad():
    logits = torch_model.eval()(torch.from_numpy(inputs).permute(0, 3, 1, 2)).numpy()
  top1 = [classes[0][0] for _, classes in predictions]
  assert top1 == [result["class_names"][i] for i in logits.argmax(-1)]
