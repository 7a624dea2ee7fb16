"""Training and evaluation throughput of jaxresnet and the PyTorch reference, side by side.

    python -m scripts.benchmark                 # this CPU, 32x32 and 224x224: runs/benchmark.*
    python -m scripts.benchmark --device gpu --dtypes bfloat16,float32 --json runs/gpu.json
    scripts/gpu_benchmark.sh                    # everything on one GPU, into $OUT

For each (resolution, dtype) it builds jaxresnet's own jitted steps (`parallel.jit_train_step`,
`parallel.jit_eval_step`: what the training loop runs) and the reference's torch steps
(`torch_reference.train_step`/`eval_step`, NCHW and channels_last, and on a `torch.compile`d
model: bench_compiled.py), compiles and warms each up, then times them in interleaved rounds,
so that load from other processes hits all of them alike. Rates are those of the fastest round
(all rounds and their median are in the JSON): on a shared machine, other processes only ever
slow a round down, and PyTorch's OpenMP threads much more so than XLA's (a busy CPU cut torch's
rate up to 30x, jaxresnet's about 2x; docs/performance.md).
Compile time is reported apart (for torch.compile, cold and warm: bench_compiled.py).

What a step is given, pure and end to end (on the CIFAR-10 JPEGs of --jpeg-tarball), is in
bench_cases.py; the timing in bench_timing.py; the table and JSON in bench_report.py.
"""

# isort: off
# Before anything that may import TensorFlow (the TFDS source): the other order segfaults.
import torchvision  # noqa: F401

# isort: on
import argparse
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `configs` and `scripts` are not installed packages.
# jax and torch share one GPU in this process: jax must not take 75% of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import torch  # noqa: E402

from jaxresnet import cli, errors, models, parallel  # noqa: E402
from jaxresnet.data import cifar10_jpeg  # noqa: E402
from scripts import bench_cases, bench_compiled, bench_report  # noqa: E402
from scripts.bench_timing import timed  # noqa: E402

DEFAULTS = {  # Per device: batch size and timed steps per round, by resolution; compiled peers.
  "cpu": {
    "batch_size": "32=64,224=16",
    "steps": "32=3,224=1",
    "repeats": 5,
    "e2e_steps": 3,
    "compile_modes": ["default"],
    "compile_dtypes": "float32",
  },
  "gpu": {
    "batch_size": "256",
    "steps": "20",
    "repeats": 3,
    "e2e_steps": 20,
    "compile_modes": ["default", "max-autotune"],
    "compile_dtypes": "bfloat16",
  },
}


def parse_sizes(spec: str) -> list[int]:
  """'32,224' -> [32, 224]; a ValueError naming a spec that is not positive numbers."""
  try:
    sizes = [int(s) for s in spec.split(",")]
  except ValueError:
    sizes = []
  if not sizes or min(sizes) < 1:
    raise ValueError(f"{spec!r} is not positive numbers, comma-separated (e.g. 32,224)")
  return sizes


def per_size(spec: str, sizes: list[int]) -> dict[int, int]:
  """'32=64,224=16' -> {32: 64, 224: 16}; a bare '256' applies to every size.

  Raises:
    ValueError: for a spec of another form, a value below 1, or one that misses a size.
  """
  try:
    if "=" not in spec:
      values = dict.fromkeys(sizes, int(spec))
    else:
      values = {int(k): int(v) for k, v in (item.split("=") for item in spec.split(","))}
  except ValueError:
    values = {}
  if not values or min(values.values()) < 1:
    raise ValueError(f"{spec!r} is not one positive number or SIZE=N,SIZE=N (e.g. 32=64,224=16)")
  missing = set(sizes) - set(values)
  if missing:
    raise ValueError(f"{spec!r} gives no value for the sizes {sorted(missing)}")
  return values


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
  """Every value the cases read, checked before any is built: a bad one is a parser error."""
  try:
    sizes = parse_sizes(args.sizes)
  except ValueError as error:
    parser.error(f"--sizes: {error}")
  for flag in ("batch_size", "steps"):
    try:
      per_size(getattr(args, flag), sizes)
    except ValueError as error:
      parser.error(f"--{flag.replace('_', '-')}: {error}")
  for flag in ("dtypes", "compile_dtypes"):  # --compile-dtypes "": no compiled peers.
    dtypes = getattr(args, flag).split(",")
    unknown = sorted(set(d for d in dtypes if d or flag == "dtypes") - set(models.DTYPES))
    if unknown:
      parser.error(f"--{flag.replace('_', '-')}: unknown {unknown}: choose from {models.DTYPES}")
  if args.repeats < 1 or args.warmup < 0 or args.e2e_steps < 0:
    parser.error("--repeats must be at least 1, --warmup and --e2e-steps at least 0")
  tarball = args.jpeg_tarball  # The default may be absent: the end-to-end rates are skipped.
  if tarball not in ("", parser.get_default("jpeg_tarball")) and not pathlib.Path(tarball).exists():
    parser.error(f"--jpeg-tarball {args.jpeg_tarball} does not exist: pass the CIFAR-10 JPEG "
                 'tarball or folder, or "" to skip the end-to-end rates')  # fmt: skip


def jpeg_folder(spec: str, tmp: str) -> pathlib.Path | None:
  """The CIFAR-10 JPEG folder of --jpeg-tarball (a tarball is unpacked into tmp), None if absent."""
  path = pathlib.Path(spec)
  if not path.exists():
    print(f"No {path}: skipping the end-to-end rates.", flush=True)
    return None
  if path.is_dir():
    return path
  os.environ[cifar10_jpeg.ENV_VAR] = spec  # The flag names this process's tarball.
  folder, unpack_s = timed(lambda: cifar10_jpeg.unpack(tmp))
  print(f"Unpacked {spec} in {unpack_s:.1f} s", flush=True)
  return folder


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = cli.ArgumentParser(prog="python -m scripts.benchmark", description=__doc__)
  parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
  parser.add_argument("--sizes", default="32,224", help="Resolutions, e.g. 32,224.")
  parser.add_argument("--dtypes", default="float32", help="float32 and/or bfloat16.")
  # Left out, these six take the device's DEFAULTS.
  parser.add_argument("--batch-size", help="'32=64,224=16', or one number for every size.")
  parser.add_argument("--steps", help="Timed steps per round, per size as --batch-size.")
  parser.add_argument("--repeats", type=int, help="Interleaved rounds.")
  parser.add_argument("--warmup", type=int, default=2, help="Untimed steps after compiling.")
  parser.add_argument(
    "--jpeg-tarball",
    default=str(cifar10_jpeg.tarball()),
    help='CIFAR-10 JPEGs (.tar.gz or folder) for end-to-end rates; "" skips. Default: '
    f"%(default)s (${cifar10_jpeg.ENV_VAR}, else beside the checkout).",
  )
  parser.add_argument("--e2e-steps", type=int, help="Timed end-to-end steps; 0 skips them.")
  parser.add_argument(
    "--workers", type=int, default=len(os.sched_getaffinity(0)), help="torch DataLoader workers."
  )
  parser.add_argument(
    "--threads",
    type=int,
    default=len(os.sched_getaffinity(0)),
    help="torch intra-op threads (XLA:CPU uses every usable core).",
  )
  parser.add_argument(
    "--compile-modes",
    type=bench_compiled.parse_modes,
    help='torch.compile peers: "default" and/or "max-autotune" (224 training only); "" none.',
  )
  parser.add_argument("--compile-dtypes", help="The dtypes that get compiled peers.")
  parser.add_argument(
    "--max-autotune-cap", type=float, default=180, help="Wall-time cap on its compile (s)."
  )
  parser.add_argument("--time-budget", type=float, default=0, help="Skip cases after this (s).")
  runs = ROOT / "runs"  # Git-ignored.
  parser.add_argument("--json", default=str(runs / "benchmark.json"), help="Rewritten per case.")
  parser.add_argument("--table", default=str(runs / "benchmark.md"), help="The markdown table.")
  parser.add_argument("--verbose", action="store_true", help="Tracebacks of user errors too.")
  args = parser.parse_args(argv)
  for field in DEFAULTS[args.device]:
    if getattr(args, field) is None:
      setattr(args, field, DEFAULTS[args.device][field])
  check_args(args, parser)
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.device == "cpu":  # As many devices as a case's mesh may take (parallel.split_cpu).
    parallel.split_cpu(len(os.sched_getaffinity(0)))
  if args.device == "gpu" and jax.default_backend() != "gpu":
    raise errors.UserError(
      f"--device gpu, but jax's backend is {jax.default_backend()}: install jax's CUDA build "
      "(pip install -e '.[gpu]') or pass --device cpu."
    )
  if args.device == "gpu" and not torch.cuda.is_available():
    raise errors.UserError(
      "--device gpu, but torch sees no CUDA device: install a CUDA build of torch or pass "
      "--device cpu."
    )
  torch.set_num_threads(args.threads)
  torch.backends.cudnn.benchmark = True  # Fixed shapes: let cuDNN pick its fastest kernels.
  sizes = parse_sizes(args.sizes)
  batch_sizes, steps_per_round = per_size(args.batch_size, sizes), per_size(args.steps, sizes)
  meta, results, start = bench_report.machine_info(args), [], time.perf_counter()
  meta["torch_compile"] = bench_compiled.describe(args)
  with tempfile.TemporaryDirectory() as tmp, bench_compiled.fresh_caches(tmp):
    folder = jpeg_folder(args.jpeg_tarball, tmp) if args.jpeg_tarball and args.e2e_steps else None
    for dtype in args.dtypes.split(","):
      for size in sizes:
        if args.time_budget and time.perf_counter() - start > args.time_budget:
          print(f"Skipping {size} {dtype}: past --time-budget {args.time_budget} s", flush=True)
          meta.setdefault("skipped", []).append([size, dtype])
          continue
        bs, n = batch_sizes[size], steps_per_round[size]
        print(f"== {size}x{size} {dtype} batch {bs}", flush=True)
        results += bench_cases.run_case(size, dtype, bs, n, args.device, folder, args)
        meta["loadavg_end"], meta["wall_s"] = os.getloadavg(), time.perf_counter() - start
        table = bench_report.format_table(results, meta)
        bench_report.write_json(args.json, meta, results, bench_report.case_ratios(results))
        if args.table:
          bench_report.write_table(args.table, table)
        print(table, flush=True)


if __name__ == "__main__":
  cli.run_plain(main)
