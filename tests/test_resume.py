"""Resume: a run killed (SIGKILL), preempted (SIGTERM) or interrupted (Ctrl-C) mid-epoch, or
stopped during its end-of-epoch evaluation, and relaunched, ends bit-identical to one that was
never interrupted, and logs every step exactly once. A damaged latest checkpoint is moved aside
and the one before it resumed."""

import pathlib
import re
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from jaxresnet import errors, train
from tests import train_helpers as th


def _launch(workdir, root, overrides, log):
  output = open(log, "w")  # noqa: SIM115  (a file, not a pipe: a full pipe would stall the run)
  command = th.train_command(workdir, root, overrides)
  return subprocess.Popen(command, cwd=th.REPO, stdout=output, stderr=subprocess.STDOUT)


def _wait_for(log, text: str, process) -> None:
  deadline = time.monotonic() + 600
  while text not in log.read_text():
    assert process.poll() is None, log.read_text()[-3000:]
    assert time.monotonic() < deadline, f"no {text!r} within 10 minutes"
    time.sleep(0.05)


def _assert_same_final_state(workdir, reference) -> None:
  reference_step, expected = th.restore(reference)
  step, state = th.restore(workdir)
  assert step == reference_step == th.TINY_STEPS
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(expected)]
  for path, a, b in zip(paths, jax.tree.leaves(expected), jax.tree.leaves(state), strict=True):
    assert a.dtype == b.dtype and np.array_equal(a, b), path
  assert th.series(workdir, "train/loss") == th.series(reference, "train/loss")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_relaunch_is_bit_identical(finished_tiny_run, cifar_root, tmp_path):
  workdir, log = tmp_path / "killed", tmp_path / "killed.log"
  process = _launch(workdir, cifar_root, th.TINY, log)
  deadline = time.monotonic() + 600
  while not th.checkpoint_steps(workdir) and process.poll() is None:
    assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, log.read_text()[-5000:]
  at_kill = th.checkpoint_steps(workdir)
  # Killed after its first checkpoint (at step 5, mid-epoch; the poll takes 50 ms, a step 250).
  assert at_kill and at_kill[-1] < th.TINY_STEPS, at_kill

  resumed = th.run_train(workdir, cifar_root, th.TINY)
  assert f"Resuming from {workdir.absolute() / 'checkpoints'}, step {at_kill[-1]}" in (
    resumed.stderr
  )
  _assert_same_final_state(workdir, finished_tiny_run)
  # Each step is logged once, and exactly as the uninterrupted run logged it.
  losses = th.series(workdir, "train/loss")
  assert [step for step, _ in losses] == list(range(1, th.TINY_STEPS + 1))
  for key in ("test/accuracy", "test/loss"):
    assert th.series(workdir, key) == th.series(finished_tiny_run, key)


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_that_step_and_resumes_bit_identical(
  finished_tiny_run, cifar_root, tmp_path
):
  """SIGTERM, as a preempting cluster sends it; Ctrl-C takes the same path (the evaluation test
  below sends it)."""
  signum, code = signal.SIGTERM, 143
  workdir, log = tmp_path / "stopped", tmp_path / "stopped.log"
  process = _launch(workdir, cifar_root, th.TINY, log)
  _wait_for(log, "step 7/", process)  # Mid-epoch, between the checkpoints at steps 5 and 10.
  signalled = time.monotonic()
  process.send_signal(signum)
  assert process.wait(timeout=120) == code, log.read_text()[-3000:]
  grace = time.monotonic() - signalled
  stopped_at = int(re.search(r"Stopped by \w+ at step (\d+)", log.read_text()).group(1))
  print(
    f"{signal.Signals(signum).name}: saved step {stopped_at} and exited {code} in {grace:.1f} s"
  )
  assert 7 <= stopped_at < 10 and th.checkpoint_steps(workdir)[-1] == stopped_at
  assert grace < 30
  assert not (workdir / "lock.json").exists()  # Released on the way out.

  resumed = th.run_train(workdir, cifar_root, th.TINY)
  assert f"step {stopped_at}" in resumed.stderr
  _assert_same_final_state(workdir, finished_tiny_run)


@pytest.mark.slow
def test_ctrl_c_during_evaluation_abandons_it_and_the_relaunch_repeats_it(
  finished_tiny_run, cifar_root, tmp_path
):
  """2,000 eval images take seconds here: Ctrl-C (SIGINT) lands while epoch 1 is evaluated; the
  run saves, exits 130, as for SIGTERM (143) above."""
  overrides = {**th.TINY, "eval_split": "test[:2000]", "eval_batch_size": 50}
  workdir, log = tmp_path / "evaluating", tmp_path / "evaluating.log"
  process = _launch(workdir, cifar_root, overrides, log)
  _wait_for(log, "step 10/", process)  # The epoch's last step: its evaluation follows.
  process.send_signal(signal.SIGINT)
  assert process.wait(timeout=120) == 130, log.read_text()[-3000:]
  assert "Stopped by SIGINT at step 10" in log.read_text()
  assert th.checkpoint_steps(workdir)[-1] == 10
  assert th.series(workdir, "test/accuracy") == []  # Abandoned.
  assert [s for s, _ in th.series(workdir, "train_epoch/loss")] == [10]

  th.run_train(workdir, cifar_root, overrides)
  assert [s for s, _ in th.series(workdir, "test/accuracy")] == [10, 20]  # Once each.
  _assert_same_final_state(workdir, finished_tiny_run)


def _damage(checkpoint: pathlib.Path, item: str) -> None:
  """Zeroes every file of one item of a checkpoint (a disk fault), or cuts them (a bad copy)."""
  files = [p for p in (checkpoint / item).rglob("*") if p.is_file() and p.stat().st_size]
  assert files, item
  for path in files:
    size = path.stat().st_size
    path.write_bytes(b"\0" * size if item == "state" else path.read_bytes()[: size // 2])


@pytest.mark.slow
def test_damaged_latest_checkpoints_are_moved_aside_and_the_one_before_resumed(
  finished_tiny_run, cifar_root, tmp_path
):
  """The last checkpoint's state zeroed (a disk fault), the one before's model info cut (a bad
  copy): both are moved aside, kept whole, and the run resumes from the third."""
  workdir = tmp_path / "damaged"
  shutil.copytree(finished_tiny_run, workdir)
  damaged = {th.TINY_STEPS: "state", th.TINY_STEPS - 5: "model"}
  for step, item in damaged.items():
    _damage(workdir / "checkpoints" / str(step), item)
  workdir_files = th.snapshot(workdir / "checkpoints")
  resumed = th.run_train(workdir, cifar_root, th.TINY)
  for step in damaged:
    assert f"Checkpoint {workdir / 'checkpoints' / str(step)} is damaged" in resumed.stderr
    (aside,) = (workdir / "damaged").glob(f"checkpoints-{step}-*")
    moved = {k.split("/", 1)[1] for k in workdir_files if k.startswith(f"{step}/")}
    assert {str(p.relative_to(aside)) for p in aside.rglob("*") if p.is_file()} == moved  # Kept.
  assert f"step {th.TINY_STEPS - 10}" in resumed.stderr  # The one before both.
  _assert_same_final_state(workdir, finished_tiny_run)


def test_no_intact_checkpoint_is_one_clear_error(mock_run, tmp_path):
  workdir = tmp_path / "all_damaged"
  shutil.copytree(mock_run[0], workdir)
  for checkpoint in (workdir / "checkpoints").iterdir():
    _damage(checkpoint, "model")
  before = {k: v for k, v in th.snapshot(workdir).items() if not k.startswith("checkpoints/")}
  with th.mocked_cifar10(), pytest.raises(errors.UserError) as raised:
    train.train_and_evaluate(mock_run[3], str(workdir))
  assert "No intact checkpoint in" in str(raised.value) and "Nothing was overwritten" in str(
    raised.value
  )
  after = th.snapshot(workdir)
  assert all(after[k] == v for k, v in before.items() if k != "lock.json")
  assert th.checkpoint_steps(workdir) == [] and len(list((workdir / "damaged").iterdir())) == 2
