"""Resume: a run killed with SIGKILL mid-epoch and relaunched ends bit-identical to one that was
never interrupted, and logs every step exactly once."""

import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from tests import train_helpers as th


@pytest.mark.slow
def test_sigkill_mid_epoch_then_relaunch_is_bit_identical(finished_tiny_run, cifar_root, tmp_path):
  workdir = tmp_path / "killed"
  command = th.train_command(workdir, cifar_root, th.TINY)
  log = tmp_path / "killed.log"  # A file, not a pipe: a full pipe would stall the run.
  with open(log, "w") as output:
    process = subprocess.Popen(command, cwd=th.REPO, stdout=output, stderr=subprocess.STDOUT)
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

  reference_step, reference = th.restore(finished_tiny_run)
  step, state = th.restore(workdir)
  assert step == reference_step == th.TINY_STEPS
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(reference)]
  for path, a, b in zip(paths, jax.tree.leaves(reference), jax.tree.leaves(state), strict=True):
    assert a.dtype == b.dtype and np.array_equal(a, b), path

  # Each step is logged once, and exactly as the uninterrupted run logged it.
  losses = th.series(workdir, "train/loss")
  assert [step for step, _ in losses] == list(range(1, th.TINY_STEPS + 1))
  assert losses == th.series(finished_tiny_run, "train/loss")
  for key in ("test/accuracy", "test/loss"):
    assert th.series(workdir, key) == th.series(finished_tiny_run, key)
