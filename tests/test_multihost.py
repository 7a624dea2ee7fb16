"""Multi-process training on one machine: 2 processes x 2 CPU devices against 1 process x 4.

The processes join over 127.0.0.1 through `jax.distributed.initialize` (gloo collectives on CPU),
as hosts of a cluster do, and train with global batch 8 on an image folder of real CIFAR-10 JPEGs.
Each process runs `tests/multihost_worker.py`: `train_and_evaluate` in float32, then a few float64
steps of the same input pipeline and jitted step.

- float32: after one epoch (2 steps) the 2-process parameters are the 1-process ones up to
  rounding, bounded relative to the update; both evaluate every test image exactly once; process
  0 alone writes metrics, figures and the config.
- float64: the same parameters to 1e-10 relative, per tensor.
- Preemption and resume: `python -m jaxresnet.train` on 2 processes, sent SIGTERM after its first
  step, saves that step on both, and relaunched ends bit-identical to the uninterrupted 2-process
  run, every record written once.

Three phases of subprocesses, each under a time limit; every process is killed when its phase ends,
passed or failed. A shared XLA compilation cache lets the second reuse the first's compiles. The
checkpoints are compared after loading them here, in one process on one device, as
`python -m jaxresnet.evaluate` loads them.
Plus fast tests of when a run counts as multi-process.
"""

import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import jax
import numpy as np
import pytest

from jaxresnet import checkpointing, distributed
from tests import multihost_worker

REPO = pathlib.Path(__file__).resolve().parents[1]
PHASE_TIMEOUT_S = 600  # Each phase takes 30-150 s on 2 busy cores.
TRAIN_PER_CLASS, TEST_PER_CLASS = 2, 1  # 20 train images: 2 steps per epoch; 10 test images.
STEPS_PER_EPOCH = 2
NUM_TEST = 10
# Environment variables through which a child could join some other cluster.
FOREIGN_ENV_PREFIXES = ("JAX_COORDINATOR", "SLURM_", "OMPI_", "TPU_")

# float32 bounds, relative to each tensor's update over the 2 steps. Measured here: 1.5e-4 (worst
# tensor) and 4e-6 (all tensors together). The differences are rounding (reductions summed in
# another order across processes; float64 agrees to 5e-13) amplified by a from-scratch ResNet-18
# on 8 images, whose BatchNorm in layer4 sees 8 values per channel. A data or gradient bug (a
# process reading another's slice, gradients not summed across processes) moves them by ~1.
F32_TENSOR_TOL, F32_TOTAL_TOL = 1e-2, 1e-3


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _child_env(devices: int, cache_dir: pathlib.Path) -> dict[str, str]:
  """CPU only, `devices` devices, a shared compilation cache, nothing of an outer cluster."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform" not in f]
  env.update(
    XLA_FLAGS=" ".join(flags),
    JAX_PLATFORMS="cpu",
    JAX_NUM_CPU_DEVICES=str(devices),
    JAX_COMPILATION_CACHE_DIR=str(cache_dir),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    TF_CPP_MIN_LOG_LEVEL="2",
  )
  return env


def _process_flags(port: int | None, num_processes: int, process_id: int) -> list[str]:
  if num_processes == 1:
    return []
  return [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
          f"--process_id={process_id}"]  # fmt: skip


def _train_command(data: pathlib.Path, workdir: pathlib.Path, epochs: int) -> list[str]:
  """`python -m jaxresnet.train` with the worker's tiny run as --config flags."""
  overrides = {"dataset": f"imagefolder:{data}", **multihost_worker.RUN, "num_epochs": epochs}
  return [
    sys.executable, "-m", "jaxresnet.train", "--config", "configs/default.py",
    "--workdir", str(workdir), *(f"--config.{k}={v}" for k, v in overrides.items()),
  ]  # fmt: skip


def _worker_command(data: pathlib.Path, workdir: pathlib.Path, epochs: int, out: pathlib.Path):
  return [
    sys.executable, "-m", "tests.multihost_worker", "--data", str(data), "--workdir", str(workdir),
    "--epochs", str(epochs), "--out", str(out),
  ]  # fmt: skip


def _job(name: str, command: list[str], num_processes: int, root: pathlib.Path) -> list[tuple]:
  """The processes of one run, (command, environment, log file) each, on a port free now."""
  port = _free_port() if num_processes > 1 else None
  env = _child_env(4 // num_processes, root / "xla_cache")
  return [
    (command + _process_flags(port, num_processes, i), env, root / "logs" / f"{name}.{i}.log")
    for i in range(num_processes)
  ]


def _tail(path: pathlib.Path, chars: int = 3000) -> str:
  return path.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def _started(processes: list[tuple[list[str], dict, pathlib.Path]]) -> Iterator[list]:
  """The processes, started side by side, each in its own session; when the block ends, passed
  or failed, each is killed with anything it started: a process whose peer died would otherwise
  wait for it until JAX's timeouts."""
  started = []
  try:
    for command, env, log in processes:
      with open(log, "w") as out:
        process = subprocess.Popen(
          command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
      started.append(process)
    yield started
  finally:
    for process in started:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
      process.wait()


def _run_phase(processes: list[tuple[list[str], dict, pathlib.Path]]) -> float:
  """Runs the processes side by side; fails as soon as one fails. Returns the wall time."""
  start = time.monotonic()
  with _started(processes) as started:
    while True:
      codes = [p.poll() for p in started]
      for code, (_, _, log) in zip(codes, processes, strict=True):
        assert code in (None, 0), f"{log.name} exited with {code}:\n{_tail(log)}"
      if all(code == 0 for code in codes):
        return time.monotonic() - start
      if time.monotonic() - start > PHASE_TIMEOUT_S:
        tails = "\n".join(f"--- {log.name}:\n{_tail(log, 1000)}" for _, _, log in processes)
        raise AssertionError(f"Processes still running after {PHASE_TIMEOUT_S} s:\n{tails}")
      time.sleep(0.2)


def _run_preempted(processes: list[tuple[list[str], dict, pathlib.Path]], text: str) -> list[int]:
  """Runs the processes until every log shows `text`, then sends each SIGTERM, as a cluster
  preempting a job does; returns their exit codes."""
  start = time.monotonic()
  with _started(processes) as started:
    while not all(text in log.read_text(errors="replace") for _, _, log in processes):
      for process, (_, _, log) in zip(started, processes, strict=True):
        assert process.poll() is None, f"{log.name} exited early:\n{_tail(log)}"
      assert time.monotonic() - start < PHASE_TIMEOUT_S, f"no {text!r} in time"
      time.sleep(0.05)
    for process in started:
      process.send_signal(signal.SIGTERM)
    return [process.wait(timeout=PHASE_TIMEOUT_S) for process in started]


def _load_state(workdir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
  """params and batch_stats of a checkpoint, loaded here (1 process) whatever wrote it."""
  variables, _, loaded = checkpointing.load_trained(workdir, str(step))
  assert loaded == step
  return multihost_worker.flat(variables)


def _history(workdir: pathlib.Path) -> list[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines if line.strip()]


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _series(workdir: pathlib.Path, key: str) -> list[tuple[int, float]]:
  return [(r["step"], r[key]) for r in _history(workdir) if key in r]


def _relative_to_update(ours, reference, initial) -> tuple[dict[str, float], float]:
  """Per tensor ||ours - reference|| / ||reference - initial||, and the same over all tensors."""
  ratios, diff2, update2 = {}, 0.0, 0.0
  for name, ref in reference.items():
    ref = ref.astype(np.float64)
    diff = np.linalg.norm(ours[name].astype(np.float64) - ref)
    update = np.linalg.norm(ref - initial[name])
    assert update > 0, name  # Every tensor moved, so the comparison means something.
    ratios[name] = diff / update
    diff2, update2 = diff2 + diff**2, update2 + update**2
  return ratios, float(np.sqrt(diff2 / update2))


@pytest.fixture(scope="module")
def runs(cifar_jpeg_root, tmp_path_factory) -> dict[str, pathlib.Path]:
  """Every run's workdir or output: 1 process x 4 devices ("one") and 2 x 2 ("two")."""
  data = cifar_jpeg_root(TRAIN_PER_CLASS, TEST_PER_CLASS)
  root = tmp_path_factory.mktemp("multihost")
  (root / "logs").mkdir()
  paths = {name: root / name for name in ("f32_one", "f32_two", "preempted", "logs")}
  paths.update(f64_one=root / "f64_one.npz", f64_two=root / "f64_two.npz")
  # 1. Side by side, one process (float32 for one epoch, 2 steps; then float64) and two
  # (float32 for two epochs, with checkpoints at steps 2 and 4; then float64).
  one = _worker_command(data, paths["f32_one"], 1, paths["f64_one"])
  two = _worker_command(data, paths["f32_two"], 2, paths["f64_two"])
  walls = [_run_phase(_job("one", one, 1, root) + _job("two", two, 2, root))]
  # 2. The CLI from scratch on 2 processes, preempted (SIGTERM to both) after its first step,
  # then relaunched: it resumes from the step both saved.
  preempted = _job("preempted", _train_command(data, paths["preempted"], 2), 2, root)
  paths["preempted_codes"] = _run_preempted(preempted, "step 1/")
  walls.append(_run_phase(_job("relaunched", _train_command(data, paths["preempted"], 2), 2, root)))
  print("phases (1 and 2 processes, relaunch):", [f"{w:.0f} s" for w in walls])
  return paths


@pytest.mark.slow
def test_float64_two_processes_match_one(runs):
  one, two = np.load(runs["f64_one"]), np.load(runs["f64_two"])
  assert (int(one["processes"]), int(two["processes"])) == (1, 2)
  assert int(one["devices"]) == int(two["devices"]) == 4
  finals = [k for k in one.files if k.startswith("final/")]
  assert len(finals) == 102  # ResNet-18: 62 params, 40 BatchNorm statistics (20 layers).
  worst, worst_update = {}, {}
  for key in finals:
    reference, ours = one[key], two[key]
    assert reference.dtype == ours.dtype == np.float64, key
    update = np.linalg.norm(reference - one[key.replace("final/", "initial/")])
    assert update > 0, key
    diff = np.linalg.norm(ours - reference)
    worst[key], worst_update[key] = diff / np.linalg.norm(reference), diff / update
    assert diff <= 1e-10 * np.linalg.norm(reference), (key, diff)
    assert diff <= 1e-10 * update, (key, diff, update)
  name, by_update = max(worst, key=worst.get), max(worst_update, key=worst_update.get)
  print(f"float64: max ||p2 - p1|| / ||p1|| = {worst[name]:.2e} ({name}); "
        f"max ||p2 - p1|| / ||p1 - p0|| = {worst_update[by_update]:.2e} ({by_update})")  # fmt: skip


@pytest.mark.slow
def test_float32_two_processes_match_one(runs):
  one, two = runs["f32_one"], runs["f32_two"]
  reference, ours = _load_state(one, STEPS_PER_EPOCH), _load_state(two, STEPS_PER_EPOCH)
  # The float64 run's initial variables are this run's (same seed and init, jitted there): they
  # only scale the bound.
  f64 = np.load(runs["f64_one"])
  initial = {k.removeprefix("initial/"): f64[k] for k in f64.files if k.startswith("initial/")}
  ratios, total = _relative_to_update(ours, reference, initial)
  name = max(ratios, key=ratios.get)
  print(f"float32: max ||p2 - p1|| / ||p1 - p0|| = {ratios[name]:.2e} ({name}); all: {total:.2e}")
  assert max(ratios.values()) <= F32_TENSOR_TOL, name
  assert total <= F32_TOTAL_TOL

  # Scores from every eval probability, gathered with the mask over both processes: as one's.
  for key in ("test/balanced_accuracy", "test/macro_f1"):
    assert _series(two, key)[0] == pytest.approx(_series(one, key)[0], abs=1e-6), key
  # After 2 steps from scratch the probabilities nearly tie, and rounding may order one pair of
  # them otherwise: with one test image per class, that moves one class's one-vs-rest AUC by 1/9
  # (macro: 1/90; seen with XLA's FAST_COMPILE preset). That every example counts once is below.
  auc_one, auc_two = _series(one, "test/macro_auc")[0], _series(two, "test/macro_auc")[0]
  assert auc_two == pytest.approx(auc_one, abs=1 / (NUM_TEST * (NUM_TEST - 1)) + 1e-9)
  # The first step's loss: same parameters, same global batch, sums in another order.
  (step, loss_one), (_, loss_two) = _series(one, "train/loss")[0], _series(two, "train/loss")[0]
  print(f"float32: first loss {loss_one!r} (1 process), {loss_two!r} (2 processes)")
  assert step == 1 and loss_two == pytest.approx(loss_one, rel=1e-5)
  # The eval split counted once over both processes, whose batches end in padding.
  for workdir in (one, two):
    table = (workdir / "per_class_accuracy.txt").read_text().splitlines()
    overall = next(line for line in table if line.startswith("overall"))
    assert overall.split()[-1] == str(NUM_TEST), overall  # "overall ... correct / 10".


@pytest.mark.slow
def test_two_process_run_writes_once(runs):
  workdir = runs["f32_two"]
  # Every step and epoch logged once (a second writer would double the records).
  assert [s for s, _ in _series(workdir, "train/loss")] == [1, 2, 3, 4]
  assert [s for s, _ in _series(workdir, "test/accuracy")] == [2, 4]
  assert len(list(workdir.glob("events.out.tfevents.*"))) == 1
  for name in ("config.json", "curves.png", "confusion_matrix.png", "per_class_accuracy.txt"):
    assert (workdir / name).is_file(), name
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]


@pytest.mark.slow
def test_two_process_preemption_saves_one_step_and_resumes_bit_identical(runs):
  """JAX's SIGTERM notifier and Orbax's sync point: both processes stop after the same step."""
  assert runs["preempted_codes"] == [143, 143], runs["preempted_codes"]
  logs = [(runs["logs"] / f"preempted.{i}.log").read_text() for i in range(2)]
  stopped = {int(re.search(r"Stopped by SIGTERM at step (\d+)", log).group(1)) for log in logs}
  assert len(stopped) == 1, stopped  # The same step on both.
  (step,) = stopped
  assert step < 2 * STEPS_PER_EPOCH and step in _checkpoint_steps(runs["preempted"])
  for i in range(2):
    relaunched = (runs["logs"] / f"relaunched.{i}.log").read_text()
    assert f"Resuming from {runs['preempted'] / 'checkpoints'}, step {step}" in relaunched
  final = 2 * STEPS_PER_EPOCH
  reference, state = _load_state(runs["f32_two"], final), _load_state(runs["preempted"], final)
  for name, value in reference.items():
    assert np.array_equal(state[name], value), name
  # The records after the saved step were cut and written again, once.
  for key in ("train/loss", "test/loss"):
    assert _series(runs["preempted"], key) == _series(runs["f32_two"], key), key


# When a run is multi-process.


@pytest.fixture
def no_tpu(monkeypatch):
  monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)


SLURM_STEP = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "8",
              "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}  # fmt: skip


@pytest.mark.parametrize(
  ("mode", "flags", "environ", "expected"),
  [
    ("auto", {}, {}, None),
    ("auto", {"process_id": 0}, {}, "command-line flags"),
    ("auto", {}, {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_COORDINATOR_ADDRESS"),
    ("auto", {}, SLURM_STEP, "SLURM (8 tasks)"),
    ("auto", {}, {**SLURM_STEP, "SLURM_NTASKS": "1"}, None),  # One task: alone.
    # An sbatch script running python itself, outside `srun`: one process, whatever the job's size.
    ("auto", {}, {k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_NODELIST"}, None),
    (
      "auto",
      {},
      {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "2"},
      "Open MPI (2 ranks)",
    ),
    ("on", {}, {}, "--distributed=on"),
    ("off", {}, SLURM_STEP, None),
  ],
)
def test_multiprocess_source(no_tpu, mode, flags, environ, expected):
  assert distributed.multiprocess_source(mode, **flags, environ=environ) == expected


def test_multiprocess_source_on_cloud_tpu(monkeypatch):
  monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: True)
  assert distributed.multiprocess_source("auto", environ={}) == "Cloud TPU VM"


def test_multiprocess_source_refuses_contradictions(no_tpu):
  with pytest.raises(ValueError, match="--distributed=off contradicts"):
    distributed.multiprocess_source("off", num_processes=2, environ={})
  with pytest.raises(ValueError, match="Unknown distributed mode 'yes'"):
    distributed.multiprocess_source("yes", environ={})


def test_lone_process_never_starts_the_runtime(no_tpu, monkeypatch):
  for name in [k for k in os.environ if k.startswith(FOREIGN_ENV_PREFIXES)]:
    monkeypatch.delenv(name)

  def fail(*args, **kwargs):
    raise AssertionError("jax.distributed.initialize called for a lone process")

  monkeypatch.setattr(jax.distributed, "initialize", fail)
  assert distributed.initialize("auto") is False
  assert distributed.initialize("off") is False
