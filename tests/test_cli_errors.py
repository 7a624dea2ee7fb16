"""Every CLI's bad input ends in one `error:` line naming the value, exit 2, and no traceback.

The seven programs (`train`, `evaluate`, `predict`, both converters, `compare_torch`,
`benchmark`) each get the mistakes a new user makes: an unknown or misspelt flag or option, a
missing required one, a value of the wrong type, a config file that is missing or broken or
lacks the field, a missing or damaged workdir, checkpoint, image, file or folder, an output that
cannot be written, a bad preset, recipe or `--set`, a benchmark spec of another form. All of
them run in one process (`tests/cli_runner.py`: each command in a child forked from it, as
`python -m` runs it), so the ~75 commands cost seconds, not a fresh interpreter each.
"""

import json
import shutil
import subprocess
import sys

import jax
import pytest
import torch
import torchvision

from jaxresnet import errors
from tests import train_helpers as th

W = "{W}"  # The cases' folder (the fixture's), filled in when they run.
MOCK = "{MOCK}"  # The finished mock run's workdir: a real checkpoint.
TRAIN = ["jaxresnet.train", "--config", "configs/quick.py", "--workdir", f"{W}/run"]
EVALUATE, PREDICT = ["jaxresnet.evaluate"], ["jaxresnet.predict"]
TO_FLAX, TO_TORCH = ["convert.torch_to_flax"], ["convert.flax_to_torch"]
COMPARE = ["scripts.compare_torch", "--output", f"{W}/compare"]
BENCH = ["scripts.benchmark", "--json", f"{W}/bench.json", "--table", ""]
R18 = ["--torch-checkpoint", f"{W}/resnet18.pt"]

# (id, command, what the error line must name)
# fmt: off
CASES = [
  ("train-unknown-flag", [*TRAIN, "--bogus=1"], "'bogus'"),
  ("train-misspelt-flag", [*TRAIN[:3], "--work_dir", f"{W}/run"], "Did you mean: workdir"),
  ("train-no-workdir", TRAIN[:3], "--workdir"),
  ("train-no-config", ["jaxresnet.train", "--workdir", f"{W}/run"], "--config"),
  ("train-config-value-type", [*TRAIN, "--config.batch_size=abc"], "--config.batch_size=abc"),
  ("train-config-unknown-field", [*TRAIN, "--config.nonexistent=1"], "'nonexistent'"),
  ("train-config-near-field", [*TRAIN, "--config.batchsize=3"], "--config.batch_size?"),
  ("train-config-file-missing", [*TRAIN[:2], "configs/nope.py", *TRAIN[3:]], "configs/nope.py"),
  ("train-config-syntax", [*TRAIN[:2], f"{W}/syntax.py", *TRAIN[3:]], "line 1: SyntaxError"),
  ("train-config-raises", [*TRAIN[:2], f"{W}/raises.py", *TRAIN[3:]], "line 2: NameError"),
  ("train-config-value", [*TRAIN, "--config.optimizer=rmsprop"], "'rmsprop'"),
  ("train-cpu-devices", [*TRAIN, "--config.cpu_devices=-2"], "config.cpu_devices must be >= 0"),
  # Split into 2 CPU devices before JAX starts: a batch of 7 does not divide over them.
  ("train-cpu-devices-batch", [*TRAIN, "--config.cpu_devices=2", "--config.batch_size=7"],
   "config.batch_size=7 is not divisible by the 2 devices"),
  ("train-no-image-folder", [*TRAIN, f"--config.dataset=imagefolder:{W}/nope"], f"{W}/nope"),
  ("train-positional", [*TRAIN, "extra"], "['extra']"),
  ("evaluate-unknown-flag", [*EVALUATE, "--workdir", MOCK, "--bogus"], "'bogus'"),
  ("evaluate-no-workdir", EVALUATE, "--workdir"),
  ("evaluate-workdir-missing", [*EVALUATE, "--workdir", f"{W}/nope"], f"{W}/nope"),
  ("evaluate-no-checkpoints", [*EVALUATE, "--workdir", f"{W}/configured"], f"{W}/configured"),
  ("evaluate-damaged", [*EVALUATE, "--workdir", f"{W}/damaged"], "is damaged"),
  ("evaluate-no-such-step", [*EVALUATE, "--workdir", MOCK, "--checkpoint=99"], "'99'"),
  ("evaluate-no-best", [*EVALUATE, "--workdir", MOCK, "--checkpoint=best"], "best"),
  ("evaluate-dataset-missing", [*EVALUATE, "--workdir", MOCK, f"--dataset=imagefolder:{W}/nope"],
   f"{W}/nope"),
  ("evaluate-positional", [*EVALUATE, "--workdir", MOCK, "extra"], "['extra']"),
  ("predict-no-paths", [*PREDICT, "--workdir", MOCK], "No images given"),
  ("predict-value-type", [*PREDICT, "--workdir", MOCK, "--batch_size=abc", W], "=abc"),
  ("predict-zero-batch", [*PREDICT, "--workdir", MOCK, "--batch_size=0", W], "--batch_size"),
  ("predict-bad-tta", [*PREDICT, "--workdir", MOCK, "--tta=vflip", W], "vflip"),
  ("predict-output-suffix", [*PREDICT, "--workdir", MOCK, "--output=x.txt", W], "x.txt"),
  ("predict-output-folder-missing",
   [*PREDICT, "--workdir", MOCK, f"--output={W}/nope/x.csv", W], f"{W}/nope"),
  ("predict-image-missing", [*PREDICT, "--workdir", MOCK, f"{W}/nope.jpg"], f"{W}/nope.jpg"),
  ("predict-folder-missing", [*PREDICT, "--workdir", MOCK, f"{W}/nope"], f"{W}/nope"),
  ("predict-not-an-image", [*PREDICT, "--workdir", MOCK, f"{W}/text.jpg"], f"{W}/text.jpg"),
  ("predict-workdir-missing", [*PREDICT, "--workdir", f"{W}/nope", W], f"{W}/nope"),
  ("predict-damaged", [*PREDICT, "--workdir", f"{W}/damaged", W], "is damaged"),
  ("to-flax-unknown-option", [*TO_FLAX, *R18, "--output", f"{W}/out", "--bogus"], "--bogus"),
  ("to-flax-no-output", [*TO_FLAX, *R18], "--output"),
  ("to-flax-value-type", [*TO_FLAX, *R18, "--output", f"{W}/out", "--num-classes=abc"], "'abc'"),
  ("to-flax-zero-classes", [*TO_FLAX, *R18, "--output", f"{W}/out", "--num-classes=0"],
   "--num-classes"),
  ("to-flax-unknown-arch", [*TO_FLAX, "--arch", "resnet19", "--output", f"{W}/out"], "resnet19"),
  ("to-flax-file-missing", [*TO_FLAX, "--torch-checkpoint", f"{W}/nope.pt", "--output",
                            f"{W}/out"], f"{W}/nope.pt"),
  ("to-flax-not-a-checkpoint", [*TO_FLAX, "--torch-checkpoint", f"{W}/text.jpg", "--output",
                                f"{W}/out"], f"{W}/text.jpg"),
  ("to-flax-not-a-state-dict", [*TO_FLAX, "--torch-checkpoint", f"{W}/list.pt", "--output",
                                f"{W}/out"], "holds a list"),
  ("to-flax-wrong-arch", [*TO_FLAX, *R18, "--arch", "resnet34", "--output", f"{W}/out"],
   "pass --arch resnet18"),
  ("to-flax-output-exists", [*TO_FLAX, *R18, "--output", f"{W}/configured"], f"{W}/configured"),
  ("to-flax-output-unwritable", [*TO_FLAX, *R18, "--output", f"{W}/text.jpg/out"],
   f"{W}/text.jpg/out"),
  ("to-flax-unknown-weights", [*TO_FLAX, "--weights", "NOPE", "--output", f"{W}/out"], "'NOPE'"),
  ("to-flax-verify-images-missing", [*TO_FLAX, *R18, "--output", f"{W}/out", "--verify",
                                     "--verify-images", f"{W}/nope"], f"{W}/nope"),
  ("to-torch-unknown-option", [*TO_TORCH, "--input", MOCK, "--output", f"{W}/m.pt", "--bogus"],
   "--bogus"),
  ("to-torch-no-input", [*TO_TORCH, "--output", f"{W}/m.pt"], "--input"),
  ("to-torch-value-type", [*TO_TORCH, "--input", MOCK, "--output", f"{W}/m.pt", "--steps=abc"],
   "'abc'"),
  ("to-torch-negative-steps", [*TO_TORCH, "--input", MOCK, "--output", f"{W}/m.pt",
                               "--steps=-1"], "--steps"),
  ("to-torch-input-missing", [*TO_TORCH, "--input", f"{W}/nope", "--output", f"{W}/m.pt"],
   f"{W}/nope"),
  ("to-torch-damaged", [*TO_TORCH, "--input", f"{W}/damaged", "--output", f"{W}/m.pt"],
   "is damaged"),
  ("to-torch-no-such-step", [*TO_TORCH, "--input", MOCK, "--checkpoint=7", "--output",
                             f"{W}/m.pt"], "'7'"),
  ("to-torch-output-unwritable", [*TO_TORCH, "--input", MOCK, "--output", f"{W}/text.jpg/m.pt"],
   f"{W}/text.jpg/m.pt"),
  ("compare-no-preset", COMPARE, "--preset"),
  ("compare-unknown-preset", [*COMPARE, "--preset", "tpu"], "'tpu'"),
  ("compare-unknown-option", [*COMPARE, "--preset", "cpu", "--bogus"], "--bogus"),
  ("compare-set-unknown-field", [*COMPARE, "--preset", "cpu", "--set", "nope=1"], "'nope'"),
  ("compare-set-bad-value", [*COMPARE, "--preset", "cpu", "--set", "seeds=abc"], "seeds=abc"),
  ("compare-set-no-equals", [*COMPARE, "--preset", "cpu", "--set", "seeds"], "--set seeds"),
  ("compare-unknown-recipe", [*COMPARE, "--preset", "cpu", "--recipes", "sgd,rmsprop"],
   "'rmsprop'"),
  ("compare-unknown-class", [*COMPARE, "--preset", "cpu", "--set", "classes=dgo"], "'dgo'"),
  ("bench-unknown-option", [*BENCH, "--bogus"], "--bogus"),
  ("bench-sizes", [*BENCH, "--sizes=32,abc"], "'32,abc'"),
  ("bench-dtypes", [*BENCH, "--dtypes=float16"], "'float16'"),
  ("bench-batch-size-form", [*BENCH, "--batch-size=32:64"], "'32:64'"),
  ("bench-batch-size-missing-size", [*BENCH, "--batch-size=32=64"], "[224]"),
  ("bench-steps", [*BENCH, "--steps=x"], "'x'"),
  ("bench-zero-repeats", [*BENCH, "--repeats=0"], "--repeats"),
  ("bench-tarball-missing", [*BENCH, "--jpeg-tarball", f"{W}/nope.tar.gz"], f"{W}/nope.tar.gz"),
  ("bench-unknown-device", [*BENCH, "--device=tpu"], "'tpu'"),
  ("bench-compile-modes", [*BENCH, "--compile-modes=fast"], "'fast'"),
]
# fmt: on
NO_GPU = ("bench-no-gpu", [*BENCH, "--device=gpu"], "--device cpu")  # Only run without one.
# fmt: off
VERBOSE = [  # --verbose: the same line, after the traceback.
  ("train-verbose", [*TRAIN, "--bogus=1", "--verbose"], "'bogus'"),
  ("to-flax-verbose", [*TO_FLAX, "--torch-checkpoint", f"{W}/nope.pt", "--output", f"{W}/out",
                       "--verbose"], f"{W}/nope.pt"),
]
# fmt: on


@pytest.fixture(scope="module")
def results(mock_run, tmp_path_factory) -> dict[str, dict]:
  """Every case's {"returncode", "stdout", "stderr"}, by id, from one runner process."""
  folder = tmp_path_factory.mktemp("bad_input")
  (folder / "text.jpg").write_text("not an image\n")
  (folder / "syntax.py").write_text("def get_config(:\n")
  (folder / "raises.py").write_text("def get_config():\n  return undefined_name\n")
  torch.save([1, 2], folder / "list.pt")
  torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), folder / "resnet18.pt")
  (folder / "configured").mkdir()  # A config and no checkpoints/.
  shutil.copy(mock_run[0] / "config.json", folder / "configured")
  shutil.copytree(folder / "configured", folder / "damaged")
  # The mock run's last checkpoint with every file of its state emptied (a disk fault).
  last = max((mock_run[0] / "checkpoints").iterdir(), key=lambda p: int(p.name))
  for file in (f for f in last.rglob("*") if f.is_file()):
    copy = folder / "damaged" / "checkpoints" / file.relative_to(last.parent)
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(b"" if "state" in file.relative_to(last).parts else file.read_bytes())
  cases = CASES + VERBOSE + ([NO_GPU] if jax.default_backend() == "cpu" else [])
  commands = [
    [arg.replace(W, str(folder)).replace(MOCK, str(mock_run[0])) for arg in command]
    for _, command, _ in cases
  ]
  runner = subprocess.run(
    [sys.executable, "-m", "tests.cli_runner"],
    input=json.dumps(commands),
    cwd=th.REPO,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert runner.returncode == 0, runner.stderr[-3000:]
  ran = json.loads(runner.stdout)
  for (_, _, words), result in zip(cases, ran, strict=True):
    result["words"] = words.replace(W, str(folder))
  return {name: result for (name, _, _), result in zip(cases, ran, strict=True)}


def _error_line(result: dict) -> str:
  """The last line of stderr, asserted to be the one `error:` line of a user error (exit 2)."""
  lines = result["stderr"].strip().splitlines()
  assert result["returncode"] == errors.USER_ERROR_EXIT, result["stderr"][-3000:]
  assert lines and lines[-1].startswith("error: "), result["stderr"][-3000:]
  assert sum(line.startswith("error:") for line in lines) == 1, result["stderr"][-3000:]
  assert result["words"] in lines[-1]
  return lines[-1]


@pytest.mark.slow  # About 25 s for all of them on 2 cores, most of it the runner's imports.
@pytest.mark.parametrize("name", [name for name, _, _ in [*CASES, NO_GPU]])
def test_bad_input_is_one_error_line_without_traceback(results, name):
  if name not in results:
    pytest.skip("a GPU: the command would run the benchmark")
  _error_line(results[name])
  assert "Traceback" not in results[name]["stderr"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, _, _ in VERBOSE])
def test_verbose_shows_the_traceback_before_the_line(results, name):
  _error_line(results[name])
  assert "Traceback (most recent call last)" in results[name]["stderr"]
