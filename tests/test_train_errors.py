"""Bad values fail naming the field and the fix and overwrite nothing; a diverged run stops with
the step range and keeps its last good checkpoint."""

import re
import shutil

import jax
import numpy as np
import pytest

from jaxresnet import train
from tests import train_helpers as th


@pytest.mark.parametrize(
  "overrides, error, words",
  [
    ({"optimizer": "rmsprop"}, ValueError, ["config.optimizer='rmsprop'", "'adam', 'sgd'"]),
    ({"model": "resnet19"}, ValueError, ["config.model='resnet19'", "'resnet18'"]),
    ({"dataset": "mnist"}, ValueError, ["config.dataset = 'mnist'", "imagefolder:PATH"]),
    ({"batch_size": 0}, ValueError, ["config.batch_size must be positive"]),
    ({"freeze": "layer4"}, ValueError, ["config.freeze='layer4'", "'head_only'"]),
    ({"batchnorm": "eval"}, ValueError, ["config.batchnorm='eval'", "'frozen', 'train'"]),
    ({"backbone_lr_multiplier": -0.1}, ValueError, ["backbone_lr_multiplier must be >= 0"]),
    ({"class_weights": "1,2"}, ValueError, ["config.class_weights='1,2'", "10 non-negative"]),
    (
      {"init_from": "/nonexistent/weights"},
      FileNotFoundError,
      ["config.init_from='/nonexistent/weights'", "convert.torch_to_flax", "init_from=''"],
    ),
  ],
)
def test_bad_config_value_fails_naming_field_and_fix(cifar_root, tmp_path, overrides, error, words):
  workdir = tmp_path / "run"
  config = th.quick_config(cifar_root, **overrides)
  with pytest.raises(error) as raised:
    train.train_and_evaluate(config, str(workdir))
  for word in words:
    assert word in str(raised.value)
  assert not workdir.exists()


def test_batch_size_not_divisible_by_devices_fails_before_writing(cifar_root, tmp_path):
  workdir = tmp_path / "run"
  result = th.run(th.train_command(workdir, cifar_root, {"batch_size": 30}), th.four_cpu_devices())
  assert result.returncode != 0
  assert "config.batch_size=30 is not divisible by the 4 devices" in result.stderr
  assert "use a multiple of 4 (e.g. 28)" in result.stderr
  assert not workdir.exists()


@pytest.mark.parametrize(
  "field, value, words",
  [
    ("model", "resnet34", "model: checkpoint 'resnet18' vs config 'resnet34'"),
    # The fine-tuning controls change the optimizer state's tree.
    ("freeze", "layer2", "freeze: checkpoint 'none' vs config 'layer2'"),
  ],
)
def test_workdir_of_another_model_is_refused_untouched(mock_run, field, value, words):
  workdir, _, _, config = mock_run
  before = th.snapshot(workdir)
  other = config.copy_and_resolve_references()
  other[field] = value
  with th.mocked_cifar10(), pytest.raises(ValueError) as raised:
    train.train_and_evaluate(other, str(workdir))
  message = str(raised.value)
  assert words in message
  assert "Use a new --workdir" in message and "nothing was overwritten" in message
  assert th.snapshot(workdir) == before


@pytest.mark.slow
def test_divergence_stops_with_step_range_and_keeps_good_checkpoints(
  finished_tiny_run, cifar_root, tmp_path
):
  """Resumes the finished run for a third epoch at lr 1e6, logging every 10 steps as quick.py.

  The state turns NaN within steps 21-25 here. The loop must notice by the mid-epoch checkpoint at
  step 25 (before saving it), not wait for the log at step 30.
  """
  workdir = tmp_path / "diverged"
  shutil.copytree(finished_tiny_run, workdir)
  checkpoints = th.snapshot(workdir / "checkpoints")
  overrides = {**th.TINY, "num_epochs": 3, "learning_rate": 1e6, "log_every_steps": 10}
  with pytest.raises(FloatingPointError) as raised:
    train.train_and_evaluate(
      th.quick_config(cifar_root, **overrides), str(workdir), allow_config_change=True
    )
  message = str(raised.value)
  print(message)
  first, last = map(int, re.search(r"diverged between steps (\d+) and (\d+)", message).groups())
  # A window between two checks: a checkpoint step (every 5), or the run's first step.
  assert first > th.TINY_STEPS and last - first == 4 and last % 5 == 0, message
  assert "lower config.learning_rate" in message
  # Nothing non-finite was saved, and the last epoch's checkpoint is untouched.
  for step in th.checkpoint_steps(workdir):
    assert step < last
    _, state = th.restore(workdir, step)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state)), step
  after = th.snapshot(workdir / "checkpoints")
  last_good = {k: v for k, v in checkpoints.items() if k.startswith(f"{th.TINY_STEPS}/")}
  assert last_good and all(after.get(k) == v for k, v in last_good.items())
  assert all(after[k] == v for k, v in checkpoints.items() if k in after)
