"""A training run's folder: what it holds, under which names, and reading it back.

    WORKDIR/config.json                the run's config, as first launched
    WORKDIR/launches.jsonl             every launch: time, host, git commit, flags, config changes
    WORKDIR/lock.json                  while a run holds the workdir: its host, PID, start time
    WORKDIR/metrics.jsonl              every logged record, one JSON object per line
    WORKDIR/events.out.tfevents.*      the same records for TensorBoard
    WORKDIR/checkpoints/, best/        Orbax checkpoints (see `checkpointing`)
    WORKDIR/curves.png, curves_last10.png, confusion_matrix.png, per_class_accuracy.txt
    WORKDIR/roc.png, precision_recall.png   the test split's one-vs-rest curves (<= 20 classes)
    WORKDIR/damaged/                   checkpoints that failed to restore, moved aside, kept

The metrics file is also the run's history: figures are redrawn from it after every epoch, and
after a resume it is cut back to the restored step so that no step is counted twice.
"""

import contextlib
import datetime
import json
import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ml_collections
from absl import logging

from jaxresnet import errors, figures, reporting

CONFIG_FILE = "config.json"
LAUNCHES_FILE = "launches.jsonl"
LOCK_FILE = "lock.json"
METRICS_FILE = "metrics.jsonl"
DAMAGED_DIR = "damaged"
LATEST_DIR = "checkpoints"
BEST_DIR = "best"
PER_CLASS_TABLE = "per_class_accuracy.txt"
EPOCH_KEYS = tuple(f"{split}/" for split in figures.EPOCH_SPLITS)  # The end-of-epoch records.


def load_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The config the run was trained with."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise errors.UserError(
      f"{path} is missing: is {workdir} a training workdir? Pass the --workdir given to "
      "`python -m jaxresnet.train`."
    )
  return ml_collections.ConfigDict(json.loads(path.read_text()))


# What a relaunch may change without --allow_config_change: how the run is run and logged, not
# what it computes (num_epochs too, under a constant learning rate). An allow-list, so that
# fields added later are protected by default.
OPERATIONAL_FIELDS = frozenset({"log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                                "eval_batch_size", "prefetch_batches", "data_dir",
                                "weights_cache_dir", "cpu_devices"})  # fmt: skip


def config_changes(
  workdir: pathlib.Path, config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict
) -> dict[str, tuple]:
  """{field: (first launch's value, this one's)} for every field that differs from config.json.

  A field missing from an older config.json compares as its value in `defaults`.
  """
  path = workdir / CONFIG_FILE
  if not path.is_file():
    return {}
  first = json.loads(path.read_text())
  now, base = (json.loads(c.to_json_best_effort()) for c in (config, defaults))
  return {
    key: (first.get(key, base.get(key)), now.get(key))
    for key in sorted(set(first) | set(now))
    if first.get(key, base.get(key)) != now.get(key)
  }


def protected_changes(changes: Mapping[str, tuple], config: ml_collections.ConfigDict) -> list[str]:
  """The changed fields a relaunch may not change silently."""
  free = OPERATIONAL_FIELDS | ({"num_epochs"} if config.lr_schedule == "constant" else set())
  return [key for key in changes if key not in free]


def record_launch(
  workdir: pathlib.Path, config: ml_collections.ConfigDict, changes: Mapping[str, tuple]
) -> None:
  """Writes config.json at the first launch only; appends this launch to launches.jsonl."""
  workdir.mkdir(parents=True, exist_ok=True)
  if not (workdir / CONFIG_FILE).exists():
    (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n")
  launch = {
    "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "git_commit": _git_commit(),
    "argv": sys.argv[1:],
    "changed": {k: {"first": a, "now": b} for k, (a, b) in changes.items()},
  }
  with open(workdir / LAUNCHES_FILE, "a") as file:
    file.write(json.dumps(launch) + "\n")


def _git_commit() -> str | None:
  """The commit of jaxresnet's checkout, if it runs from one."""
  try:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pathlib.Path(__file__).parent,
                            capture_output=True, text=True, timeout=5, check=False)  # fmt: skip
  except (OSError, subprocess.TimeoutExpired):
    return None
  return result.stdout.strip() or None


@contextlib.contextmanager
def locked(workdir: pathlib.Path, primary: bool = True) -> Iterator[None]:
  """Holds WORKDIR/lock.json for the run: one run per workdir.

  A second launch refuses at once and names the holder. A lock whose process is gone (same host)
  is taken over with a warning. In a multi-process run, the primary process holds it.
  """
  if not primary:
    yield
    return
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / LOCK_FILE
  me = {"host": socket.gethostname(), "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}  # fmt: skip
  while True:
    try:
      with open(path, "x") as file:
        json.dump(me, file)
      break
    except FileExistsError:
      holder = _read_lock(path)
      if holder is not None and _is_alive(holder):
        raise errors.UserError(
          f"{workdir} is in use by PID {holder['pid']} on {holder['host']} (since "
          f"{holder.get('started', '?')}): wait for that run to end or stop it, or use another "
          f"--workdir. If that run is gone, delete {path}."
        ) from None
      logging.warning("Taking over %s from a run that is gone: %s", path, holder)
      path.unlink(missing_ok=True)
  try:
    yield
  finally:
    if _read_lock(path) == me:
      path.unlink(missing_ok=True)


def _read_lock(path: pathlib.Path) -> dict | None:
  try:
    holder = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return None  # Gone, or cut short by a crash mid-write: stale.
  return holder if isinstance(holder, dict) and {"host", "pid"} <= set(holder) else None


def _is_alive(holder: dict) -> bool:
  """Whether the lock's process still runs; a lock from another host is presumed alive."""
  if holder["host"] != socket.gethostname():
    return True
  try:
    os.kill(int(holder["pid"]), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Another user's process.
  return True


def checkpoint_dir(workdir: pathlib.Path, which: str) -> pathlib.Path:
  """`checkpoints/` for "latest" (and step numbers), `best/` for "best"."""
  return pathlib.Path(workdir).absolute() / (BEST_DIR if which == "best" else LATEST_DIR)


def is_training_workdir(path: pathlib.Path) -> bool:
  return (pathlib.Path(path) / LATEST_DIR).is_dir()


def read_history(workdir: pathlib.Path, up_to_step: int | None = None) -> list[dict]:
  """The metrics file's records; with `up_to_step`, drops later ones and rewrites the file.

  A line that is not a whole record (a run killed mid-write, a full disk) is skipped with a
  warning: the history is a report, never a reason to stop a run.
  """
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  records = []
  for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
    try:
      record = json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
      record = "damaged"
    if record is None:
      continue
    if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
      logging.warning("Skipping line %d of %s, which is not a whole record: %.80r", number, path,
                      line)  # fmt: skip
      continue
    records.append(record)
  if up_to_step is not None:
    records = [r for r in records if r["step"] <= up_to_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return records


def _epoch_records(workdir: pathlib.Path) -> list[dict]:
  return [r for r in read_history(workdir) if any(k.startswith(EPOCH_KEYS) for k in r)]


def last_epoch_results(workdir: pathlib.Path) -> dict[str, float]:
  """The last epoch's records of the run (training's, then evaluation's), merged."""
  records = _epoch_records(workdir)
  last = [r for r in records if r["epoch"] == records[-1]["epoch"]] if records else []
  return {k: v for r in last for k, v in r.items() if k.startswith(EPOCH_KEYS)}


def evaluated_epochs(workdir: pathlib.Path) -> set[int]:
  """The epochs whose evaluation was recorded."""
  prefixes = tuple(f"{split}/" for split in figures.EPOCH_SPLITS if split != "train_epoch")
  return {
    int(r["epoch"]) for r in _epoch_records(workdir) if any(k.startswith(prefixes) for k in r)
  }


def write_epoch_report(
  workdir: pathlib.Path, test: Mapping[str, Any], class_names: Sequence[str], epoch: int
) -> None:
  """The curves (from the metrics file), and the test split's confusion matrix, per-class table
  and (up to `figures.MAX_CURVE_CLASSES` classes) ROC and precision-recall curves.

  Args:
    test: the test split's `evaluation.Results`, with `scores.one_vs_rest`'s values added.
  """
  history = read_history(workdir)
  figures.plot_curves(history, workdir / "curves.png")
  figures.plot_curves(history, workdir / "curves_last10.png", last_epochs=10)
  confusion = test["confusion_matrix"]
  title = f"test confusion matrix, epoch {epoch}"
  figures.plot_confusion_matrix(confusion, class_names, workdir / "confusion_matrix.png", title)
  figures.plot_one_vs_rest_curves(test["probabilities"], test["labels"], class_names, test,
                                  workdir, "", f"test, epoch {epoch}")  # fmt: skip
  table = reporting.per_class_table(confusion, class_names, test["auc"])
  (workdir / PER_CLASS_TABLE).write_text(table + "\n")
