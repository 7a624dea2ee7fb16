"""A workdir's guards and records: one run at a time, the config as first launched and every
launch after it, metrics that survive a cut line, and errors a person can read."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from jaxresnet import errors, evaluate, train
from jaxresnet import workdir as workdir_lib
from tests import train_helpers as th


def test_a_second_run_refuses_naming_the_holder(tmp_path):
  with workdir_lib.locked(tmp_path):
    holder = json.loads((tmp_path / "lock.json").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(errors.UserError, match=f"in use by PID {os.getpid()} on "):
      with workdir_lib.locked(tmp_path):
        pass
  assert not (tmp_path / "lock.json").exists()


def test_a_stale_lock_is_taken_over_and_a_foreign_host_is_respected(tmp_path):
  gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)  # fmt: skip
  lock = tmp_path / "lock.json"
  lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout)}))
  with workdir_lib.locked(tmp_path):
    assert json.loads(lock.read_text())["pid"] == os.getpid()
  lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "then"}))
  with pytest.raises(errors.UserError, match="in use by PID 1 on elsewhere"):
    with workdir_lib.locked(tmp_path):
      pass
  assert json.loads(lock.read_text())["host"] == "elsewhere"  # Not ours to remove.


@pytest.mark.slow
def test_two_concurrent_launches(cifar_root, tmp_path):
  workdir, log = tmp_path / "run", tmp_path / "first.log"
  with open(log, "w") as output:
    first = subprocess.Popen(th.train_command(workdir, cifar_root, th.TINY), cwd=th.REPO,
                             stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
  try:
    while "step 1/" not in log.read_text():
      assert first.poll() is None, log.read_text()[-3000:]
    second = th.run(th.train_command(workdir, cifar_root, th.TINY))
    assert second.returncode == errors.USER_ERROR_EXIT
    assert f"error: {workdir} is in use by PID {first.pid} on " in second.stderr
    assert "Traceback" not in second.stderr
  finally:
    first.terminate()
    first.wait(timeout=120)


@pytest.fixture
def relaunchable(mock_run, tmp_path):
  """A copy of the finished mocked run, and its config."""
  workdir = tmp_path / "run"
  shutil.copytree(mock_run[0], workdir)
  return workdir, mock_run[3].copy_and_resolve_references()


def test_config_changes_are_refused_listed_and_recorded(relaunchable):
  workdir, config = relaunchable
  first = (workdir / "config.json").read_text()
  changed = config.copy_and_resolve_references()
  changed.learning_rate, changed.hflip = 0.01, False
  with th.mocked_cifar10(), pytest.raises(errors.UserError) as raised:
    train.train_and_evaluate(changed, str(workdir))
  assert "learning_rate: 0.001 -> 0.01" in str(raised.value) and "hflip: True -> False" in str(
    raised.value
  )
  assert "--allow_config_change" in str(raised.value)

  operational = config.copy_and_resolve_references()
  operational.log_every_steps, operational.eval_batch_size = 1, 8
  with th.mocked_cifar10():
    train.train_and_evaluate(operational, str(workdir))
    train.train_and_evaluate(changed, str(workdir), allow_config_change=True)
  assert (workdir / "config.json").read_text() == first  # Written once.
  launches = [json.loads(line) for line in (workdir / "launches.jsonl").read_text().splitlines()]
  assert [sorted(launch["changed"]) for launch in launches] == [
    [],
    ["eval_batch_size", "log_every_steps"],
    ["hflip", "learning_rate"],
  ]
  assert launches[2]["changed"]["learning_rate"] == {"first": 0.001, "now": 0.01}
  assert all(launch["host"] == socket.gethostname() for launch in launches)


def test_a_field_missing_from_an_old_config_compares_as_its_default(relaunchable):
  workdir, config = relaunchable
  saved = json.loads((workdir / "config.json").read_text())
  del saved["label_smoothing"]  # As if written before the field existed.
  (workdir / "config.json").write_text(json.dumps(saved))
  with th.mocked_cifar10():
    train.train_and_evaluate(config, str(workdir))  # The default: no change.
    config.label_smoothing = 0.1
    with pytest.raises(errors.UserError, match=r"label_smoothing: 0.0 -> 0.1"):
      train.train_and_evaluate(config, str(workdir))


def test_a_damaged_metrics_line_is_skipped(tmp_path, caplog):
  lines = ['{"step": 1, "train/loss": 2.0}', '{"step": 2, "train/lo', "\0\0\0", '{"step": 3}']
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
  assert [r["step"] for r in workdir_lib.read_history(tmp_path, up_to_step=3)] == [1, 3]
  assert "Skipping line 2" in caplog.text and "Skipping line 3" in caplog.text
  assert [r["step"] for r in workdir_lib.read_history(tmp_path)] == [1, 3]  # Rewritten whole.


def test_evaluate_names_a_damaged_checkpoint(relaunchable):
  workdir, _ = relaunchable
  state_files = [p for p in (workdir / "checkpoints/6/state").rglob("*") if p.is_file()]
  for path in state_files:
    path.write_bytes(b"\0" * path.stat().st_size)
  with th.mocked_cifar10(), pytest.raises(errors.UserError) as raised:
    evaluate.evaluate_checkpoint(workdir, "latest", None)
  message = str(raised.value)
  assert f"Checkpoint {workdir.absolute() / 'checkpoints' / '6'} is damaged" in message
  assert "--checkpoint (one of [3, 6])" in message


@pytest.mark.parametrize("verbose", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_cli_user_errors_are_one_line_without_traceback(tmp_path, verbose):
  command = [sys.executable, "-m", "jaxresnet.train", "--config", "configs/quick.py",
             "--workdir", str(tmp_path / "run"), "--config.optimizer=rmsprop"]  # fmt: skip
  result = th.run(command + (["--verbose"] if verbose else []))
  assert result.returncode == errors.USER_ERROR_EXIT
  last = result.stderr.strip().splitlines()[-1]
  assert last == "error: Unknown config.optimizer='rmsprop': choose one of ['adam', 'sgd']."
  assert ("Traceback" in result.stderr) == verbose
  assert not (tmp_path / "run").exists()
