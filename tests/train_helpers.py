"""What the training tests share: tiny runs through the CLI or in process, and reading workdirs."""

import contextlib
import hashlib
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import jax
import ml_collections
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from configs import quick
from jaxresnet import network
from jaxresnet import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]

# The real data: the quick config reads train[:2560]; the test split has 2,000 images, on which
# the standard deviation of a measured accuracy is at most 1.1 points (0.67 at chance, 10%).
TRAIN_PER_CLASS, TEST_PER_CLASS = 300, 200

# A tiny run for the resume and error tests: 10 steps of 8 images per epoch, 2 epochs, a
# checkpoint every 5 steps, train metrics logged (and checked for NaN) at every step. SGD with
# momentum (the paper's optimizer) and quick.py's warmup + cosine schedule, whose step count is
# part of the state.
TINY = {
  "optimizer": "sgd",
  "learning_rate": 0.01,
  "train_split": "train[:80]",
  "eval_split": "test[:100]",
  "source_image_size": 16,
  "image_size": 32,
  "batch_size": 8,
  "eval_batch_size": 100,
  "num_epochs": 2,
  "checkpoint_every_steps": 5,
  "log_every_steps": 1,
}
TINY_STEPS = 20

# The in-process run on mocked TFDS CIFAR-10: 24 images, 3 steps of 8 per epoch, 2 epochs.
MOCK_EXAMPLES = 24
MOCK_STEPS_PER_EPOCH = 3


def mock_config(data_dir: pathlib.Path, **overrides) -> ml_collections.ConfigDict:
  config = quick.get_config()
  config.update(dataset="cifar10", data_dir=str(data_dir), train_split="train", image_size=32,
                batch_size=8, eval_batch_size=16, log_every_steps=2, **overrides)  # fmt: skip
  return config


@contextlib.contextmanager
def mocked_cifar10() -> Iterator[None]:
  """TFDS CIFAR-10 replaced by `tfds.testing.mock_data` (the same images at every use)."""
  with pytest.MonkeyPatch.context() as patch, tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    patch.setattr(network, "can_reach", lambda host, port: True)  # The mock downloads nothing.
    yield


def train_command(workdir: pathlib.Path, root: pathlib.Path, overrides: dict) -> list[str]:
  """`python -m jaxresnet.train` with configs/quick.py and `overrides` as --config flags."""
  values = {"dataset": f"imagefolder:{root}", **overrides}
  return [
    sys.executable, "-m", "jaxresnet.train", "--config", "configs/quick.py",
    "--workdir", str(workdir), *(f"--config.{k}={v}" for k, v in values.items()),
  ]  # fmt: skip


def run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs `command` in the repository root, bounded in time, capturing its output."""
  return subprocess.run(
    command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
  )


def run_train(
  workdir: pathlib.Path, root: pathlib.Path, overrides: dict
) -> subprocess.CompletedProcess:
  result = run(train_command(workdir, root, overrides))
  assert result.returncode == 0, result.stderr[-5000:]
  return result


def four_cpu_devices() -> dict[str, str]:
  """The environment of a child process that sees 4 CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
  return env


def quick_config(root: pathlib.Path, **overrides) -> ml_collections.ConfigDict:
  """configs/quick.py as the CLI builds it from the same overrides, for in-process runs."""
  config = quick.get_config()
  config.update({"dataset": f"imagefolder:{root}", **overrides})
  return config


def series(workdir: pathlib.Path, key: str) -> list[tuple[int, float]]:
  """(step, value) of every record of the metrics file holding `key`."""
  return [(r["step"], r[key]) for r in workdir_lib.read_history(workdir) if key in r]


def event_tags(workdir: pathlib.Path) -> set[str]:
  """Scalar tags written to the workdir's TensorBoard event files (read without TensorFlow)."""
  from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

  files = sorted(workdir.glob("events.out.tfevents.*"))
  assert files, "no TensorBoard event file"
  return {
    value.tag
    for file in files
    for event in EventFileLoader(str(file)).Load()
    for value in event.summary.value
  }


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  """Finished checkpoints only: Orbax writes into `<step>.orbax-checkpoint-tmp*` and renames."""
  directory = workdir / workdir_lib.LATEST_DIR
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def restore(workdir: pathlib.Path, step: int | None = None) -> tuple[int, dict]:
  """(step, whole TrainState as a dict of arrays) of a checkpoint, by default the latest."""
  options = ocp.CheckpointManagerOptions(read_only=True)
  manager = ocp.CheckpointManager(
    workdir / workdir_lib.LATEST_DIR, options=options, item_names=("state", "model")
  )
  step = manager.latest_step() if step is None else step
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  manager.close()
  return step, jax.device_get(state)


def snapshot(directory: pathlib.Path) -> dict[str, tuple[str, int]]:
  """Every file under `directory`: sha256 of its bytes and its mtime."""
  return {
    str(path.relative_to(directory)): (
      hashlib.sha256(path.read_bytes()).hexdigest(),
      path.stat().st_mtime_ns,
    )
    for path in sorted(directory.rglob("*"))
    if path.is_file()
  }
