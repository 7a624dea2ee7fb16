"""scripts/: the CIFAR-10 JPEG builder on a tiny synthetic download, and the benchmarks' pieces.

Nothing here touches the network or times a real model: the builder reads a download made in
tmp_path, and the benchmark modules are checked on hand-made runners and results.
"""

import importlib
import io
import itertools
import json
import math
import pickle
import sys
import tarfile
import time
import urllib.request

import jaxlib
import numpy as np
import pytest
from PIL import Image

from jaxresnet import errors, network
from jaxresnet.data import cifar10_jpeg
from scripts import bench_compiled, bench_report, bench_timing, make_cifar10_jpeg

PER_BATCH = 6  # Images per synthetic batch: 30 train, 6 test.
# JPEG at quality 75 with 4:2:0 chroma errs by a few levels on smooth images (about 4 on these);
# a wrong image, a wrong order or a CHW/HWC mix-up errs by 40 or more.
MAX_MEAN_ABS_DIFF = 8.0


def smooth_images(rng: np.random.Generator, n: int) -> np.ndarray:
  """uint8 [n, 32, 32, 3]: random 4x4 colour grids blown up bilinearly, so JPEG keeps them."""
  grids = rng.integers(0, 256, (n, 4, 4, 3), np.uint8)
  return np.stack([np.asarray(Image.fromarray(g).resize((32, 32), Image.BILINEAR)) for g in grids])


@pytest.fixture
def download(tmp_path) -> tuple:
  """A cifar-10-python.tar.gz pickled as the official one; and its (images, labels) by split."""
  rng = np.random.default_rng(0)
  path, expected = tmp_path / "cifar-10-python.tar.gz", {}
  with tarfile.open(path, "w:gz") as tar:
    for split, names in make_cifar10_jpeg.BATCHES.items():
      images, labels = [], []
      for name in names:
        batch_images, batch_labels = smooth_images(rng, PER_BATCH), rng.integers(0, 10, PER_BATCH)
        batch = {
          b"batch_label": name.encode(),
          b"labels": batch_labels.tolist(),
          b"data": batch_images.transpose(0, 3, 1, 2).reshape(PER_BATCH, 3072),  # CHW, as CIFAR.
          b"filenames": [f"{i}.png".encode() for i in range(PER_BATCH)],
        }
        blob = pickle.dumps(batch)
        info = tarfile.TarInfo(f"{make_cifar10_jpeg.SOURCE_DIR}/{name}")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        images.append(batch_images)
        labels.append(batch_labels)
      expected[split] = np.concatenate(images), np.concatenate(labels)
  return path, expected


def test_convert_writes_the_layout_numbered_per_class(download, tmp_path):
  source, expected = download
  output = tmp_path / "out" / "cifar10-jpeg.tar.gz"
  assert make_cifar10_jpeg.convert(source, output) == {"train": 5 * PER_BATCH, "test": PER_BATCH}
  assert not output.with_name(output.name + ".partial").exists()

  with tarfile.open(output) as tar:
    members = tar.getmembers()
    folders = {m.name for m in members if m.isdir()}
    files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
  top = cifar10_jpeg.TOP_DIR
  assert folders == {top} | {
    f"{top}/{split}{suffix}"
    for split in ("train", "test")
    for suffix in ["", *(f"/{c}" for c in cifar10_jpeg.CLASSES)]
  }
  assert [m.name for m in members] == sorted(m.name for m in members)  # As the shared tarball.
  wanted = {}  # Member name: (split, position of its source image in the split's batches).
  for split, (_, labels) in expected.items():
    for label, class_name in enumerate(cifar10_jpeg.CLASSES):
      # NNNN counts the class's images in the order the batches hold them.
      for index, position in enumerate(np.flatnonzero(labels == label)):
        wanted[cifar10_jpeg.member(split, class_name, index)] = split, position
  assert set(files) == set(wanted)
  assert any(name.endswith("/0001.jpg") for name in files)  # Some class numbers past 0.
  for name, (split, position) in wanted.items():
    decoded = np.asarray(Image.open(io.BytesIO(files[name])), np.float32)
    assert decoded.shape == (32, 32, 3)
    diffs = np.abs(expected[split][0] - decoded).mean(axis=(1, 2, 3))
    assert diffs[position] < MAX_MEAN_ABS_DIFF, name
    assert diffs.argmin() == position, f"{name} is closer to another image"


def test_output_unpacks_through_cifar10_jpeg(download, tmp_path, monkeypatch):
  output = tmp_path / "cifar10-jpeg.tar.gz"
  make_cifar10_jpeg.convert(download[0], output)
  monkeypatch.setenv(cifar10_jpeg.ENV_VAR, str(output))
  folder = cifar10_jpeg.unpack(tmp_path / "unpacked", {"train": 1, "test": 0})
  assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg")) == sorted(
    f"train/{c}/0000.jpg" for c in {cifar10_jpeg.CLASSES[i] for i in download[1]["train"][1]}
  )


def test_wrong_md5_is_rejected_before_unpickling(download, tmp_path):
  source, _ = download
  output = tmp_path / "cifar10-jpeg.tar.gz"
  with pytest.raises(SystemExit, match=f"md5 .*not {make_cifar10_jpeg.MD5}"):
    make_cifar10_jpeg.main(["--output", str(output), "--source", str(source)])
  assert not output.exists()
  make_cifar10_jpeg.verify_md5(source, make_cifar10_jpeg.md5sum(source))  # Its own md5 passes.


def test_offline_download_fails_fast_saying_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setattr(network, "can_reach", lambda *args, **kwargs: False)

  def no_network(*args, **kwargs):
    raise AssertionError("tried the network")

  monkeypatch.setattr(urllib.request, "urlretrieve", no_network)
  start = time.perf_counter()
  with pytest.raises(SystemExit) as error:
    make_cifar10_jpeg.main(
      ["--output", str(tmp_path / "x.tar.gz"), "--download-dir", str(tmp_path)]
    )
  assert time.perf_counter() - start < 2
  message = str(error.value)
  for part in ("unreachable", make_cifar10_jpeg.URL, make_cifar10_jpeg.MD5, "--source PATH"):
    assert part in message


@pytest.fixture
def entry_points(monkeypatch) -> dict:
  """scripts.benchmark and scripts.bench_input, imported as `python -m` does."""
  # Importing them sets this and prepends the checkout to sys.path: both are undone after.
  monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  monkeypatch.setattr(sys, "path", list(sys.path))
  return {name: importlib.import_module(f"scripts.{name}") for name in ("benchmark", "bench_input")}


def test_benchmark_finds_the_tarball_through_cifar10_jpeg(entry_points, monkeypatch):
  benchmark = entry_points["benchmark"]
  monkeypatch.setenv(cifar10_jpeg.ENV_VAR, "/elsewhere/cifar10-jpeg.tar.gz")
  args = benchmark.parse_args([])
  assert args.jpeg_tarball == "/elsewhere/cifar10-jpeg.tar.gz"
  assert (args.batch_size, args.repeats) == ("32=64,224=16", 5)
  assert benchmark.per_size(args.batch_size, [32, 224]) == {32: 64, 224: 16}


def test_interleaved_rounds_alternate_and_report_the_fastest():
  calls = []
  runners = [
    bench_timing.Runner(name, "train", lambda n, name=name: calls.append((name, n)), {"x": 1})
    for name in ("a", "b")
  ]
  bench_timing.interleaved_rounds(runners, warmup=1, repeats=2, steps_per_round=3, batch_size=4)
  assert calls == [("a", 1), ("b", 1), ("a", 3), ("b", 3), ("a", 3), ("b", 3)]
  assert all(len(r.rates) == len(r.cpu_s) == len(r.others) == 2 for r in runners)

  runner = bench_timing.Runner("a", "eval", lambda n: None, {"compile_s": 2.0})
  runner.rates, runner.cpu_s, runner.others = [1.0, 3.0, 2.0], [0.1, 0.2, 0.3], [0.5, 0.05, 0.2]
  summary = runner.summary()
  assert (summary["img_s"], summary["median"], summary["compile_s"]) == (3.0, 2.0, 2.0)
  assert summary["others_cpu_share_in_fastest"] == 0.05
  # 10 busy s of 100, 2 of them this process's: others took 8%.
  assert bench_timing.others_share((10, 100, 1), (20, 200, 3)) == pytest.approx(0.08)


def test_bench_input_counts_whole_batches(entry_points):
  taken = []

  def batches():
    for i in itertools.count():
      taken.append(i)
      yield {"label": np.zeros(4)}

  rate = entry_points["bench_input"].images_per_second(batches(), num_images=10, batch_size=4)
  assert rate > 0 and len(taken) == 4  # 1 warm-up batch, then ceil(10 / 4) timed ones.


def result(framework: str, train: float, eval_: float, e2e: float | None, busy: float) -> dict:
  row = {
    "size": 32,
    "dtype": "float32",
    "batch_size": 8,
    "framework": framework,
    "flops_per_image_xla": 1e9,
    "train": {
      "img_s": train,
      "others_cpu_share_in_fastest": busy,
      "compile_s": 1.5,
      "step_memory_mib_xla": 100.0,
    },
    "eval": {"img_s": eval_, "others_cpu_share_in_fastest": 0.0},
  }
  if e2e is not None:
    row["e2e"] = {"img_s": e2e}
  return row


META = {
  "jax_device": "cpu",
  "cpu": "Test CPU",
  "cpu_cores_usable": 2,
  "git_commit": "0123456789abcdef",
  "git_dirty": True,
  "date": "2026-01-01",
  "python": "3.11.7",
  "jax": "0.1",
  "jaxlib": "0.2",
  "flax": "0.3",
  "torch": "2.0",
  "torchvision": "0.4",
}


def cells(line: str) -> list[str]:
  return [cell.strip() for cell in line.split("|")[1:-1]]


def test_table_columns_rows_and_ratios():
  compiled = result("torch_compile", 150.0, 500.0, 40.0, busy=0.0)
  compiled["train"] |= {"compile_cold_s": 40.25, "compile_warm_s": 1.5}
  # A max-autotune row past its cap: its train step has a setup, no rate; it has no eval step.
  capped = result("torch_compile_max_autotune", 0.0, 0.0, None, busy=0.0)
  capped["train"] = {"compile_cap_s": 180.0, "compile_cold_s": 180.4, "error": "over"}
  del capped["eval"]
  results = [
    result("jaxresnet", 200.0, 400.0, 100.0, busy=0.02),
    result("torch", 100.0, 100.0, 50.0, busy=0.0),
    result("torch_cl", 50.0, 200.0, None, busy=0.0),
    compiled,
    capped,
  ]
  lines = bench_report.format_table(results, META).splitlines()
  assert lines[0] == (
    "cpu (Test CPU, 2 cores usable), git 0123456789 (dirty), 2026-01-01; "
    "other processes used up to 2% of the CPUs during the reported rounds"
  )
  assert lines[2] == "python 3.11.7, jax 0.1, jaxlib 0.2, flax 0.3, torch 2.0, torchvision 0.4"
  start = lines.index(bench_report.TABLE_HEADER)
  assert cells(lines[start]) == [
    "size",
    "dtype",
    "batch",
    "framework",
    "train img/s",
    "eval img/s",
    "end-to-end img/s",
    "compile s",
    "memory MiB",
    "train TFLOP/s (MFU)",
  ]
  head = ["32", "float32", "8"]
  autotune = "torch_compile_max_autotune"
  assert [cells(line) for line in lines[start + 2 :]] == [
    head + ["jaxresnet", "200.0", "400.0", "100.0", "1.5", "100", "0.2"],
    head + ["torch", "100.0", "100.0", "50.0", "1.5", "100", "0.1"],
    head + ["torch_cl", "50.0", "200.0", "-", "1.5", "100", "0.05"],
    head + ["torch_compile", "150.0", "500.0", "40.0", "40.2 / 1.5", "100", "0.15"],
    head + [autotune, "-", "-", "-", "over its 180 s cap", "-", "-"],
    head + ["**jaxresnet / torch**", "**2.00**", "4.00", "2.00", "", "", ""],
    head + ["**jaxresnet / torch_cl**", "**4.00**", "2.00", "-", "", "", ""],
    head + ["**jaxresnet / torch_compile**", "**1.33**", "0.80", "2.50", "", "", ""],
    head + [f"**jaxresnet / {autotune}**", "**-**", "-", "-", "", "", ""],
    # Per kind, the fastest PyTorch row: torch_compile trains and evaluates, torch end to end.
    head
    + ["**jaxresnet / fastest torch**", "**1.33 (torch_compile)**", "0.80 (torch_compile)"]
    + ["2.00 (torch)", "", "", ""],
  ]
  results[0]["train"]["others_cpu_share_in_fastest"] = 0.3
  first = bench_report.format_table(results, META).splitlines()[0]
  assert first.endswith(
    "up to 30% of the CPUs during the reported rounds: BUSY MACHINE, rerun on a quiet one"
  )


def test_json_holds_meta_results_and_ratios(tmp_path):
  path = tmp_path / "new" / "bench.json"
  meta = META | {"loadavg": (0.5, 0.4, 0.3), "data": tmp_path}
  bench_report.write_json(path, meta, [{"img_s": 1.0}])
  saved = json.loads(path.read_text())
  assert saved == {
    "meta": META | {"loadavg": [0.5, 0.4, 0.3], "data": str(tmp_path)},
    "results": [{"img_s": 1.0}],
  }
  results = [result("jaxresnet", 200.0, 400.0, None, 0.0), result("torch", 100.0, 800.0, 50.0, 0.0)]
  bench_report.write_json(path, meta, results, bench_report.case_ratios(results))
  assert json.loads(path.read_text())["ratios"] == [
    {
      "size": 32,
      "dtype": "float32",
      "batch_size": 8,
      "jaxresnet_over": {"torch": {"train": 2.0, "eval": 0.5, "e2e": None}},
      "jaxresnet_over_fastest_torch": {
        "train": {"framework": "torch", "img_s": 100.0, "ratio": 2.0},
        "eval": {"framework": "torch", "img_s": 800.0, "ratio": 0.5},
        "e2e": {"framework": "torch", "img_s": 50.0, "ratio": None},
      },
    }
  ]


def test_compiled_peers_per_device_size_and_dtype(entry_points):
  benchmark = entry_points["benchmark"]
  cpu, gpu = benchmark.parse_args([]), benchmark.parse_args(["--device", "gpu"])
  names = {
    (device, size, dtype): [p.framework for p in bench_compiled.case_peers(size, dtype, args)]
    for device, args in (("cpu", cpu), ("gpu", gpu))
    for size in (32, 224)
    for dtype in ("float32", "bfloat16")
  }
  assert names == {
    ("cpu", 32, "float32"): ["torch_compile"],
    ("cpu", 224, "float32"): ["torch_compile"],
    ("cpu", 32, "bfloat16"): [],
    ("cpu", 224, "bfloat16"): [],
    ("gpu", 32, "float32"): [],
    ("gpu", 224, "float32"): [],
    ("gpu", 32, "bfloat16"): ["torch_compile"],
    ("gpu", 224, "bfloat16"): ["torch_compile", "torch_compile_max_autotune"],
  }
  autotune = bench_compiled.case_peers(224, "bfloat16", gpu)[1]
  assert (autotune.mode, autotune.kinds, autotune.cap_s) == ("max-autotune", ("train",), 180)
  assert bench_compiled.case_peers(224, "float32", benchmark.parse_args(["--compile-modes="])) == []
  with pytest.raises(errors.UserError, match="unknown mode"):  # An `error:` line, exit 2.
    benchmark.parse_args(["--compile-modes", "fast"])


def test_compile_past_its_cap_is_abandoned_and_recorded():
  calls = []

  def step(seconds: float):
    def run(n: int) -> None:
      calls.append(seconds)
      time.sleep(seconds)

    return run

  quick = bench_timing.Runner("torch_compile", "train", step(0.01), {})
  slow = bench_timing.Runner(
    "torch_compile_max_autotune", "train", step(5.0), {"compile_cap_s": 0.2}
  )
  start = time.perf_counter()
  bench_compiled.compile_runners([quick, slow])
  assert time.perf_counter() - start < 3  # The cap cut the 5 s "compile" short.
  assert calls == [0.01, 5.0, 0.01]  # Cold for both; warm only for the one that compiled.
  assert 0.01 <= quick.setup["compile_cold_s"] < 1 and 0.01 <= quick.setup["compile_warm_s"] < 1
  assert "error" not in quick.setup
  assert 0.2 <= slow.setup["compile_cold_s"] < 1.5 and "compile_warm_s" not in slow.setup
  assert "0.2 s cap" in slow.setup["error"]
  assert slow.summary() == slow.setup  # Never timed: its setup alone.

  def broken(n: int) -> None:
    raise RuntimeError("not a cap")

  with pytest.raises(RuntimeError, match="not a cap"):  # Any other error is not swallowed.
    bench_compiled.compile_runners(
      [bench_timing.Runner("x", "train", broken, {"compile_cap_s": 9})]
    )


@pytest.mark.slow
def test_benchmark_times_the_compiled_peer_and_its_ratios(entry_points, tmp_path, monkeypatch):
  """The whole benchmark at toy scale on the CPU (32x32, batch 2, one round): torch.compile's
  row with its cold and warm compiles, and the ratios to every PyTorch row and the fastest. The
  peer compiles its eval step only (inductor's cold compile of the train step alone takes ~35 s
  on 2 cores; a train-only peer, max-autotune's, is covered by the unit tests above), so the
  train column's fastest is an eager row."""
  eval_only = bench_compiled.Peer("torch_compile", "default", ("eval",))
  monkeypatch.setattr(bench_compiled, "case_peers", lambda size, dtype, args: [eval_only])
  json_path, table_path = tmp_path / "bench.json", tmp_path / "bench.md"
  toy = "--sizes 32 --batch-size 2 --steps 1 --repeats 1 --warmup 1 --e2e-steps 0".split()
  paths = ["--jpeg-tarball", "", "--json", str(json_path), "--table", str(table_path)]
  entry_points["benchmark"].main(toy + paths)

  saved = json.loads(json_path.read_text())
  rows = {row["framework"]: row for row in saved["results"]}
  torch_rows = ["torch", "torch_cl", "torch_compile"]
  assert list(rows) == ["jaxresnet", *torch_rows]
  for name, row in rows.items():
    for kind in ("train", "eval") if name != "torch_compile" else ("eval",):
      assert math.isfinite(row[kind]["img_s"]) and row[kind]["img_s"] > 0
  assert "img_s" not in rows["torch_compile"].get("train", {})
  compiled = rows["torch_compile"]["eval"]
  # The warm compile read what the cold one wrote to the (fresh) inductor cache.
  assert compiled["compile_cold_s"] > compiled["compile_warm_s"] > 0

  (ratios,) = saved["ratios"]
  for kind, peers in (("train", torch_rows[:2]), ("eval", torch_rows)):
    ours = rows["jaxresnet"][kind]["img_s"]
    for name in peers:
      assert ratios["jaxresnet_over"][name][kind] == pytest.approx(ours / rows[name][kind]["img_s"])
    fastest = max(peers, key=lambda name: rows[name][kind]["img_s"])
    theirs = rows[fastest][kind]["img_s"]
    assert ratios["jaxresnet_over_fastest_torch"][kind] == {
      "framework": fastest,
      "img_s": theirs,
      "ratio": pytest.approx(ours / theirs),
    }
  assert "e2e" not in ratios["jaxresnet_over_fastest_torch"]  # Not run: no fastest to name.
  assert saved["meta"]["jaxlib"] == jaxlib.__version__
  assert saved["meta"]["torch_compile"]["optimizer_step"].startswith("eager")

  table = table_path.read_text()
  assert (
    f"| 32 | float32 | 2 | torch_compile | - | {compiled['img_s']:.1f} | - | "
    f"{compiled['compile_cold_s']:.1f} / {compiled['compile_warm_s']:.1f} |"
  ) in table
  fastest_eval = ratios["jaxresnet_over_fastest_torch"]["eval"]
  assert f"{fastest_eval['ratio']:.2f} ({fastest_eval['framework']})" in table


def test_bench_layers_times_every_convolution_in_both_frameworks(tmp_path):
  """scripts.bench_layers at toy scale: every distinct convolution of ResNet-18 (11 at 32x32),
  each piece in both frameworks (the stem has no input gradient), with a table row per layer."""
  bench_layers = importlib.import_module("scripts.bench_layers")
  out = {"json": tmp_path / "layers.json", "table": tmp_path / "layers.md"}
  toy = ["--size", "32", "--batch-size", "2", "--repeats", "1", "--steps", "1", "--warmup", "0"]
  bench_layers.main([*toy, "--json", str(out["json"]), "--table", str(out["table"])])
  rows = json.loads(out["json"].read_text())["rows"]
  assert [row["name"] for row in rows] == [
    "conv1", "layer1 3x3", "layer2.0.conv1", "layer2.0.downsample", "layer2 3x3",
    "layer3.0.conv1", "layer3.0.downsample", "layer3 3x3", "layer4.0.conv1",
    "layer4.0.downsample", "layer4 3x3",
  ]  # fmt: skip
  for row in rows:
    pieces = ["forward", "weight_grad"] + ([] if row["name"] == "conv1" else ["input_grad"])
    for framework in ("jaxresnet", "torch_cl"):
      for piece in pieces:
        assert row[f"{framework}/{piece}"]["ms"] > 0, (row["name"], framework, piece)
  table = out["table"].read_text()
  assert all(f"| {row['name']} |" in table for row in rows) and "**all, wall ms**" in table
