"""What the benchmarks save beside their numbers, and the forms they save them in.

A rate means little without the machine, the software versions and the code it was measured
with, so every JSON carries them (`{"meta": ..., "results": [...]}`); `format_table` is
benchmark.py's markdown table.
"""

import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import flax
import jax
import torch
import torchvision

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Dense peak TFLOP/s by jax device_kind: bf16 tensor cores; float32 rows use TF32 (half).
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 PCIe": 756.5, "H200": 989.4, "A100": 312.0}
# The memory column: measured device peaks where the allocator reports them, else XLA's plan.
MEMORY_KEYS = ("peak_mib_torch", "process_peak_mib_jax", "step_memory_mib_xla")
TABLE_HEADER = (
  "| size | dtype | batch | framework | train img/s | eval img/s | end-to-end img/s "
  "| compile s | memory MiB | train TFLOP/s (MFU) |"
)


def _git(*cmd: str) -> str:
  try:
    return subprocess.run(
      ["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ""


def host_info(args) -> dict:
  """The code version, the CPU, the load and the software, without starting any device."""
  cpu = next(
    (
      line.split(":", 1)[1].strip()
      for line in open("/proc/cpuinfo")
      if line.startswith("model name")
    ),
    platform.processor(),
  )
  return {
    # Without git (e.g. a copied checkout), gpu_benchmark.sh passes the commit in $GIT_COMMIT.
    "git_commit": _git("rev-parse", "HEAD") or os.environ.get("GIT_COMMIT", "unknown"),
    "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "argv": sys.argv,
    "args": vars(args),
    "cpu": cpu,
    "cpu_cores_usable": len(os.sched_getaffinity(0)),
    "loadavg_start": os.getloadavg(),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "flax": flax.__version__,
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
  }


def machine_info(args) -> dict:
  """`host_info` and the devices jax and torch run on, with the settings that change rates."""
  info = host_info(args) | {
    "torch_threads": torch.get_num_threads(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "jax_device": str(jax.devices()[0].device_kind),
    "jax_devices": jax.device_count(),
    "torch_cudnn_benchmark": torch.backends.cudnn.benchmark,
    "torch_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
  }
  if torch.cuda.is_available():
    info["torch_device"] = torch.cuda.get_device_name()
  return info


def git_label(meta: dict) -> str:
  """'git 0123456789 (dirty)': the code a result came from."""
  return f"git {meta['git_commit'][:10]}{' (dirty)' if meta['git_dirty'] else ''}"


def peak_tflops(dtype: str) -> float | None:
  """The device's dense peak for `dtype`, None where PEAK_BF16_TFLOPS does not know it."""
  kind = jax.devices()[0].device_kind
  peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)
  return None if peak is None else (peak if dtype == "bfloat16" else peak / 2)


def format_table(results: list[dict], meta: dict) -> str:
  """A markdown table, with the jaxresnet/torch ratios under each case."""
  # How much of the CPUs other processes took during the rounds the table reports.
  busy = max(
    row[kind]["others_cpu_share_in_fastest"] for row in results for kind in ("train", "eval")
  )
  lines = [
    f"{meta['jax_device']} ({meta['cpu']}, {meta['cpu_cores_usable']} cores usable), "
    f"{git_label(meta)}, {meta['date']}; "
    f"other processes used up to {100 * busy:.0f}% of the CPUs during the reported rounds"
    + (": BUSY MACHINE, rerun on a quiet one" if busy > 0.1 else ""),
    "",
    "Fastest of the interleaved rounds; compile time apart. Pure step: data resident on the "
    "device (jaxresnet: uint8 32x32, preprocessed in the step; torch: normalized float at the "
    "target size). End to end: each framework's input pipeline on the CIFAR-10 JPEGs.",
    "",
    TABLE_HEADER,
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


def _write(path: str | pathlib.Path, text: str) -> None:
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(path).write_text(text)


def write_json(path: str | pathlib.Path, meta: dict, results: list[dict]) -> None:
  """`{"meta": meta, "results": results}` at `path`, its folder made if need be."""
  _write(path, json.dumps({"meta": meta, "results": results}, indent=1, default=str))


def write_table(path: str | pathlib.Path, table: str) -> None:
  """The markdown table at `path`, its folder made if need be."""
  _write(path, table + "\n")
