"""Training and evaluation throughput of jaxresnet and the PyTorch reference, side by side.

    python scripts/benchmark.py                 # this CPU, 32x32 and 224x224: runs/benchmark.*
    python scripts/benchmark.py --device gpu --dtypes bfloat16,float32 --json runs/gpu.json
    scripts/gpu_benchmark.sh                    # everything on one GPU, into $OUT

For each (resolution, dtype) it builds jaxresnet's own jitted steps (`parallel.jit_train_step`,
`parallel.jit_eval_step`: what the training loop runs) and the reference's torch steps
(`torch_reference.train_step`/`eval_step`, NCHW and channels_last), compiles and warms each up,
then times them in interleaved rounds, so that load from other processes hits all of them alike.
Rates are those of the fastest round (all rounds and their median are in the JSON): on a shared
machine, other processes only ever slow a round down, and PyTorch's OpenMP threads much more so
than XLA's (a busy CPU cut torch's rate up to 30x, jaxresnet's about 2x; docs/performance.md).
Compile time is reported apart.

What a step is given (each product's design):
  pure step   jaxresnet: uint8 32x32 source images resident on the device; the step resizes
              (PIL-exact), flips, normalizes, then updates. torch: float32 tensors already at the
              target size and normalized (what the paper's DataLoader yields), resident on the
              device. Same model, batch, optimizer and device.
  end to end  each input pipeline on the real CIFAR-10 JPEGs (--jpeg-tarball): jaxresnet's tf.data
              image folder -> `to_global` -> step; torch's ImageFolder + PIL transforms +
              DataLoader -> `.to(device)` -> step.
"""

# isort: off
import torchvision  # Before TensorFlow (input_pipeline imports it): the other order segfaults.

# isort: on
import argparse
import dataclasses
import functools
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `configs` is not an installed package.
# jax and torch share one GPU in this process: jax must not take 75% of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch_reference  # noqa: E402

from configs import default  # noqa: E402
from jaxresnet import models, optimizers, parallel, steps  # noqa: E402

NUM_CLASSES = 10
TARBALL = ROOT.parent / "shared/datasets/cifar10-jpeg.tar.gz"
SOURCE_SIZE = 32  # CIFAR-10's images, what jaxresnet's host ships.
# Dense peak TFLOP/s by jax device_kind: bf16 tensor cores; float32 rows use TF32 (half).
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 PCIe": 756.5, "H200": 989.4, "A100": 312.0}
# The memory column: measured device peaks where the allocator reports them, else XLA's plan.
MEMORY_KEYS = ("peak_mib_torch", "process_peak_mib_jax", "step_memory_mib_xla")
DEFAULTS = {  # Per device: batch size and timed steps per round, by resolution.
  "cpu": {"batch_size": "32=64,224=16", "steps": "32=3,224=1", "repeats": 5, "e2e_steps": 3},
  "gpu": {"batch_size": "256", "steps": "20", "repeats": 3, "e2e_steps": 20},
}


@dataclasses.dataclass
class Runner:
  """One timed thing: `run(n)` does n steps and returns once they are done."""

  framework: str  # "jaxresnet", "torch", "torch_cl"
  kind: str  # "train" or "eval"
  run: Callable[[int], None]
  setup: dict
  rates: list = dataclasses.field(default_factory=list)
  cpu_s: list = dataclasses.field(default_factory=list)
  others: list = dataclasses.field(default_factory=list)  # Other processes' share of the CPUs.


def per_size(spec: str, sizes: list[int]) -> dict[int, int]:
  """'32=64,224=16' -> {32: 64, 224: 16}; a bare '256' applies to every size."""
  if "=" not in spec:
    return dict.fromkeys(sizes, int(spec))
  values = {int(k): int(v) for k, v in (item.split("=") for item in spec.split(","))}
  missing = set(sizes) - set(values)
  if missing:
    raise ValueError(f"{spec!r} gives no value for the sizes {sorted(missing)}.")
  return values


def cpu_counters() -> tuple[float, float, float]:
  """(busy, total) seconds of all CPUs since boot, and this process's own CPU seconds."""
  with open("/proc/stat") as stat:
    ticks = [int(v) for v in stat.readline().split()[1:9]]
  hz, own = os.sysconf("SC_CLK_TCK"), os.times()
  return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz, own.user + own.system


def others_share(start: tuple, end: tuple) -> float:
  """The share of all CPUs that other processes used between two `cpu_counters()`."""
  busy, total, own = (b - a for a, b in zip(start, end, strict=True))
  return max(0.0, busy - own) / total if total > 0 else 0.0


def timed(fn: Callable[[], object]) -> tuple[object, float]:
  start = time.perf_counter()
  result = fn()
  return result, time.perf_counter() - start


def make_config(size: int, dtype: str, batch_size: int) -> ml_collections.ConfigDict:
  """The default config (SGD, as configs/sgd.py) at this resolution, dtype and batch size."""
  config = default.get_config()
  config.image_size, config.dtype = size, dtype
  config.batch_size = config.eval_batch_size = batch_size
  config.num_classes, config.init_from = NUM_CLASSES, ""
  config.weight_decay = 1e-4  # The paper's SGD, so both optimizers do the decay work.
  return config


def synthetic_uint8(batch_size: int, masked: bool = False) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.integers(0, 256, (batch_size, SOURCE_SIZE, SOURCE_SIZE, 3), np.uint8),
    "label": (np.arange(batch_size) % NUM_CLASSES).astype(np.int32),
  }
  if masked:
    batch["mask"] = np.ones(batch_size, bool)
  return batch


def jax_runners(config, mesh) -> tuple[list[Runner], dict]:
  """jaxresnet's train and eval steps on resident synthetic batches; and the jitted train step
  with its state holder, for the end-to-end run."""
  model = models.create_model(config.model, NUM_CLASSES, jnp.dtype(config.dtype))
  tx = optimizers.create_optimizer(config, steps_per_epoch=50_000 // config.batch_size)
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(jax.random.key(0), jnp.zeros((1, config.image_size, config.image_size, 3)))
  state = steps.create_train_state(model, variables, tx)
  holder = {"state": jax.device_put(state, parallel.replicated(mesh))}
  rng = jax.random.key(1)
  train_batch = parallel.to_global(synthetic_uint8(config.batch_size), mesh)
  eval_batch = parallel.to_global(synthetic_uint8(config.batch_size, masked=True), mesh)

  train_step = parallel.jit_train_step(config, mesh)
  lowered, lower_s = timed(lambda: train_step.lower(holder["state"], train_batch, rng))
  compiled, compile_s = timed(lowered.compile)
  # The lowered HLO's count, where the backend gives one (XLA:CPU). A GPU gives none, and its
  # compiled count misses the cuDNN convolutions (158 MFLOP/image at 224 on an H200), so no MFU
  # there: scale this script's CPU count (9.94 GFLOP/image at 224) instead, as the docs do.
  cost = lowered.cost_analysis()
  flops = cost["flops"] / config.batch_size if cost else float("nan")
  memory = compiled.memory_analysis()
  step_bytes = (
    memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    + memory.temp_size_in_bytes
    - memory.alias_size_in_bytes
  )

  def run_train(n: int, batches=None) -> None:
    for _ in range(n):
      batch = train_batch if batches is None else parallel.to_global(next(batches), mesh)
      holder["state"], step_metrics = train_step(holder["state"], batch, rng)
    jax.block_until_ready((holder["state"], step_metrics))

  eval_step = parallel.jit_eval_step(config, mesh)
  _, eval_compile_s = timed(lambda: eval_step.lower(holder["state"], eval_batch).compile())

  def run_eval(n: int) -> None:
    jax.block_until_ready([eval_step(holder["state"], eval_batch) for _ in range(n)])

  _, first_s = timed(lambda: run_train(1))
  _, eval_first_s = timed(lambda: run_eval(1))
  train_setup = {
    "trace_lower_s": lower_s,
    "compile_s": compile_s,
    "first_step_s": first_s,
    "step_memory_mib_xla": step_bytes / 2**20,
  }
  eval_setup = {"compile_s": eval_compile_s, "first_step_s": eval_first_s}
  runners = [
    Runner("jaxresnet", "train", run_train, train_setup),
    Runner("jaxresnet", "eval", run_eval, eval_setup),
  ]
  return runners, {"run_train": run_train, "flops_per_image": flops}


def torch_runners(config, device: str, channels_last: bool) -> tuple[list[Runner], dict]:
  """The reference's train and eval steps on resident normalized float batches."""
  torch.manual_seed(0)
  name = "torch_cl" if channels_last else "torch"
  model = torch_reference.create_model(NUM_CLASSES, "", channels_last, device)
  optimizer = torch_reference.create_optimizer(
    config.optimizer,
    model.parameters(),
    lr=config.learning_rate,
    momentum=config.momentum,
    weight_decay=config.weight_decay,
  )
  autocast = torch_reference.AUTOCAST[config.dtype]
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  shape = (config.batch_size, 3, config.image_size, config.image_size)
  images = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
  labels = torch.arange(config.batch_size, device=device) % NUM_CLASSES
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def run_train(n: int, batches=None) -> None:
    for _ in range(n):
      x, y = (images, labels) if batches is None else next(batches)
      x = x.to(device, non_blocking=True, memory_format=memory_format)
      torch_reference.train_step(model, optimizer, x, y.to(device, non_blocking=True), autocast)
    sync()

  def run_eval(n: int) -> None:
    for _ in range(n):
      torch_reference.eval_step(model, images, labels, autocast)
    sync()

  _, first_s = timed(lambda: run_train(1))
  _, eval_first_s = timed(lambda: run_eval(1))
  runners = [
    Runner(name, "train", run_train, {"first_step_s": first_s}),
    Runner(name, "eval", run_eval, {"first_step_s": eval_first_s}),
  ]
  return runners, {"run_train": run_train}


def measure_memory(runner: Runner, device: str, steps_per_round: int) -> None:
  """Peak device memory of one round, where the allocator reports it (GPU)."""
  if device != "cuda":
    return
  if runner.framework == "jaxresnet":
    runner.run(steps_per_round)  # jax has no peak reset: the process-wide peak so far.
    stats = jax.devices()[0].memory_stats() or {}
    runner.setup["process_peak_mib_jax"] = stats.get("peak_bytes_in_use", 0) / 2**20
  else:
    torch.cuda.reset_peak_memory_stats()
    runner.run(steps_per_round)
    runner.setup["peak_mib_torch"] = torch.cuda.max_memory_allocated() / 2**20


def end_to_end(run_train, framework: str, config, folder: pathlib.Path, device: str, args):
  """Rate of `run_train` fed by the framework's own input pipeline from the JPEG folder."""
  if framework == "jaxresnet":
    # Imported here: it brings TensorFlow, which a GPU box may lack for the pure-step rows.
    from jaxresnet import input_pipeline

    e2e_config = config.copy_and_resolve_references()
    e2e_config.dataset = f"imagefolder:{folder}"
    info = input_pipeline.get_info(e2e_config)
    batches = input_pipeline.train_batches(e2e_config, info, 0)
  else:
    train_set, test_set = torch_reference.create_datasets(str(folder), config.image_size, "")
    loader, _ = torch_reference.create_loaders(
      train_set, test_set, config.batch_size, args.workers, device == "cuda"
    )
    batches = iter(loader)
  _, startup_s = timed(lambda: run_train(args.warmup, batches))
  rates = []
  for _ in range(min(args.repeats, 3)):
    _, seconds = timed(lambda: run_train(args.e2e_steps, batches))
    rates.append(args.e2e_steps * config.batch_size / seconds)
  return {
    "img_s": max(rates),
    "rates": rates,
    "steps_per_round": args.e2e_steps,
    "startup_and_warmup_s": startup_s,
  }


def run_case(size, dtype, batch_size, steps_per_round, device, mesh, folder, args) -> list[dict]:
  """Every framework's train/eval rates at one (size, dtype, batch size), interleaved."""
  config = make_config(size, dtype, batch_size)
  torch_device = "cuda" if device == "gpu" else "cpu"
  jax_rs, jax_extra = jax_runners(config, mesh)
  built = {"jaxresnet": (jax_rs, jax_extra)}
  for channels_last in (False, True):
    runners, extra = torch_runners(config, torch_device, channels_last)
    built[runners[0].framework] = (runners, extra)
  runners = [r for rs, _ in built.values() for r in rs]
  for runner in runners:
    runner.run(args.warmup)
  for _ in range(args.repeats):
    for runner in runners:
      counters = cpu_counters()
      _, seconds = timed(lambda r=runner: r.run(steps_per_round))
      end = cpu_counters()
      runner.rates.append(steps_per_round * batch_size / seconds)
      # Host CPU seconds (all threads) per step: on a CPU, how busy the cores were kept.
      runner.cpu_s.append((end[2] - counters[2]) / steps_per_round)
      runner.others.append(others_share(counters, end))
  for runner in runners:
    measure_memory(runner, torch_device, steps_per_round)

  results = []
  for framework, (rs, extra) in built.items():
    row = {
      "size": size,
      "dtype": dtype,
      "batch_size": batch_size,
      "framework": framework,
      "steps_per_round": steps_per_round,
      "rounds": args.repeats,
      "flops_per_image_xla": jax_extra["flops_per_image"],
      "config": config.to_dict(),
    }
    for r in rs:
      # The fastest round: load from other processes only ever slows a round down.
      row[r.kind] = {
        "img_s": max(r.rates),
        "median": statistics.median(r.rates),
        "rates": r.rates,
        "host_cpu_s_per_step": r.cpu_s,
        "others_cpu_share": r.others,
        "others_cpu_share_in_fastest": r.others[r.rates.index(max(r.rates))],
        **r.setup,
      }
    if folder is not None and args.e2e_steps:
      try:
        row["e2e"] = end_to_end(extra["run_train"], framework, config, folder, torch_device, args)
      except Exception as error:  # noqa: BLE001 (e.g. a small /dev/shm for DataLoader workers)
        row["e2e"] = {"error": f"{type(error).__name__}: {error}"}
    results.append(row)
  del built, runners
  if torch_device == "cuda":
    torch.cuda.empty_cache()
  return results


def peak_tflops(dtype: str) -> float | None:
  kind = jax.devices()[0].device_kind
  peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)
  return None if peak is None else (peak if dtype == "bfloat16" else peak / 2)


def machine_info(args) -> dict:
  """Hardware, software and code version, saved beside the numbers."""

  def git(*cmd: str) -> str:
    try:
      return subprocess.run(
        ["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True
      ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      return ""

  cpu = next(
    (
      line.split(":", 1)[1].strip()
      for line in open("/proc/cpuinfo")
      if line.startswith("model name")
    ),
    platform.processor(),
  )
  info = {
    "git_commit": git("rev-parse", "HEAD") or os.environ.get("GIT_COMMIT", "unknown"),
    "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "argv": sys.argv,
    "args": vars(args),
    "cpu": cpu,
    "cpu_cores_usable": len(os.sched_getaffinity(0)),
    "torch_threads": torch.get_num_threads(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "loadavg_start": os.getloadavg(),
    "jax_device": str(jax.devices()[0].device_kind),
    "jax_devices": jax.device_count(),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "flax": __import__("flax").__version__,
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
    "torch_cudnn_benchmark": torch.backends.cudnn.benchmark,
    "torch_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
  }
  if torch.cuda.is_available():
    info["torch_device"] = torch.cuda.get_device_name()
  return info


def format_table(results: list[dict], meta: dict) -> str:
  """A markdown table, with the jaxresnet/torch ratios under each case."""
  # How much of the CPUs other processes took during the rounds the table reports.
  busy = max(
    row[kind]["others_cpu_share_in_fastest"] for row in results for kind in ("train", "eval")
  )
  lines = [
    f"{meta['jax_device']} ({meta['cpu']}, {meta['cpu_cores_usable']} cores usable), "
    f"git {meta['git_commit'][:10]}{' (dirty)' if meta['git_dirty'] else ''}, {meta['date']}; "
    f"other processes used up to {100 * busy:.0f}% of the CPUs during the reported rounds"
    + (": BUSY MACHINE, rerun on a quiet one" if busy > 0.1 else ""),
    "",
    "Fastest of the interleaved rounds; compile time apart. Pure step: data resident on the "
    "device (jaxresnet: uint8 32x32, preprocessed in the step; torch: normalized float at the "
    "target size). End to end: each framework's input pipeline on the CIFAR-10 JPEGs.",
    "",
    "| size | dtype | batch | framework | train img/s | eval img/s | end-to-end img/s "
    "| compile s | memory MiB | train TFLOP/s (MFU) |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]

  def rate(row, kind):
    part = row.get(kind, {})
    return part.get("img_s") if "img_s" in part else None

  def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)

  cases = {}
  for row in results:
    cases.setdefault((row["size"], row["dtype"], row["batch_size"]), {})[row["framework"]] = row
  for (size, dtype, batch), rows in cases.items():
    for name, row in rows.items():
      tflops = rate(row, "train") * row["flops_per_image_xla"] / 1e12
      peak = peak_tflops(dtype) if meta["jax_device"] != "cpu" else None
      mfu = f"{tflops:.3g} ({100 * tflops / peak:.1f}%)" if peak else f"{tflops:.3g}"
      mfu = "-" if tflops != tflops else mfu  # NaN: no FLOP count on this backend.
      train_part = row["train"]
      memory = next((train_part[k] for k in MEMORY_KEYS if k in train_part), None)
      lines.append(
        f"| {size} | {dtype} | {batch} | {name} | {fmt(rate(row, 'train'))} | "
        f"{fmt(rate(row, 'eval'))} | {fmt(rate(row, 'e2e'))} | {fmt(train_part.get('compile_s'))} "
        f"| {fmt(memory, '.0f')} | {mfu} |"
      )
    for name in ("torch", "torch_cl"):
      if "jaxresnet" in rows and name in rows:
        ratios = []
        for kind in ("train", "eval", "e2e"):
          a, b = rate(rows["jaxresnet"], kind), rate(rows[name], kind)
          ratios.append(None if a is None or b is None else a / b)
        lines.append(
          f"| {size} | {dtype} | {batch} | **jaxresnet / {name}** | **{fmt(ratios[0], '.2f')}** | "
          f"{fmt(ratios[1], '.2f')} | {fmt(ratios[2], '.2f')} | | | |"
        )
  return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
  parser.add_argument("--sizes", default="32,224", help="Resolutions, e.g. 32,224.")
  parser.add_argument("--dtypes", default="float32", help="float32 and/or bfloat16.")
  # Left out, these four take the device's DEFAULTS.
  parser.add_argument("--batch-size", help="'32=64,224=16', or one number for every size.")
  parser.add_argument("--steps", help="Timed steps per round, per size as --batch-size.")
  parser.add_argument("--repeats", type=int, help="Interleaved rounds.")
  parser.add_argument("--warmup", type=int, default=2, help="Untimed steps after compiling.")
  parser.add_argument(
    "--jpeg-tarball",
    default=str(TARBALL),
    help='CIFAR-10 JPEGs (.tar.gz or folder) for end-to-end rates; "" skips.',
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
  parser.add_argument("--time-budget", type=float, default=0, help="Skip cases after this (s).")
  runs = ROOT / "runs"  # Git-ignored.
  parser.add_argument("--json", default=str(runs / "benchmark.json"), help="Rewritten per case.")
  parser.add_argument("--table", default=str(runs / "benchmark.md"), help="The markdown table.")
  args = parser.parse_args(argv)
  for field in ("batch_size", "steps", "repeats", "e2e_steps"):
    if getattr(args, field) is None:
      setattr(args, field, DEFAULTS[args.device][field])
  return args


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  if args.device == "gpu" and jax.default_backend() != "gpu":
    raise SystemExit(f"--device gpu, but jax's backend is {jax.default_backend()}.")
  if args.device == "gpu" and not torch.cuda.is_available():
    raise SystemExit("--device gpu, but torch sees no CUDA device.")
  torch.set_num_threads(args.threads)
  torch.backends.cudnn.benchmark = True  # Fixed shapes: let cuDNN pick its fastest kernels.
  sizes = [int(s) for s in args.sizes.split(",")]
  batch_sizes, steps_per_round = per_size(args.batch_size, sizes), per_size(args.steps, sizes)
  mesh = parallel.create_mesh()
  meta, results, start = machine_info(args), [], time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    folder = None
    if args.jpeg_tarball and args.e2e_steps:
      folder = pathlib.Path(args.jpeg_tarball)
      if not folder.exists():
        print(f"No {folder}: skipping the end-to-end rates.", flush=True)
        folder = None
      elif folder.is_file():
        folder, unpack_s = timed(lambda: torch_reference.unpack(args.jpeg_tarball, tmp))
        print(f"Unpacked {args.jpeg_tarball} in {unpack_s:.1f} s", flush=True)
    for dtype in args.dtypes.split(","):
      for size in sizes:
        if args.time_budget and time.perf_counter() - start > args.time_budget:
          print(f"Skipping {size} {dtype}: past --time-budget {args.time_budget} s", flush=True)
          meta.setdefault("skipped", []).append([size, dtype])
          continue
        bs, n = batch_sizes[size], steps_per_round[size]
        print(f"== {size}x{size} {dtype} batch {bs}", flush=True)
        results += run_case(size, dtype, bs, n, args.device, mesh, folder, args)
        meta["loadavg_end"], meta["wall_s"] = os.getloadavg(), time.perf_counter() - start
        table = format_table(results, meta)
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(
          json.dumps({"meta": meta, "results": results}, indent=1, default=str)
        )
        if args.table:
          pathlib.Path(args.table).parent.mkdir(parents=True, exist_ok=True)
          pathlib.Path(args.table).write_text(table + "\n")
        print(table, flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
