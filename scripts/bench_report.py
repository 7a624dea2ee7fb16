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
import jaxlib
import torch
import torchvision

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Dense peak TFLOP/s by jax device_kind: bf16 tensor cores; float32 rows use TF32 (half).
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 PCIe": 756.5, "H200": 989.4, "A100": 312.0}
# The memory column: measured device peaks where the allocator reports them, else XLA's plan.
MEMORY_KEYS = ("peak_mib_torch", "process_peak_mib_jax", "step_memory_mib_xla")
KINDS = ("train", "eval", "e2e")  # Pure train step, pure eval step, end-to-end training.
VERSIONS = ("python", "jax", "jaxlib", "flax", "torch", "torchvision")  # In the table's header.
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
    "jaxlib": jaxlib.__version__,
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


def rate(row: dict, kind: str) -> float | None:
  """A row's images/s for one kind of step ("train", "eval", "e2e"), None if not measured."""
  return row.get(kind, {}).get("img_s")


def _ratio(a: float | None, b: float | None) -> float | None:
  return None if a is None or b is None else a / b


def group_cases(results: list[dict]) -> dict[tuple, dict[str, dict]]:
  """The rows by case (size, dtype, batch size), then by framework, in the order measured."""
  cases = {}
  for row in results:
    cases.setdefault((row["size"], row["dtype"], row["batch_size"]), {})[row["framework"]] = row
  return cases


def case_ratios(results: list[dict]) -> list[dict]:
  """Per case with a jaxresnet row, its rate over every PyTorch row's, and over the fastest
  PyTorch row's, per kind of step (the fastest may be another row for each kind)."""
  ratios = []
  for (size, dtype, batch), rows in group_cases(results).items():
    if "jaxresnet" not in rows:
      continue
    ours, peers = rows["jaxresnet"], {n: r for n, r in rows.items() if n != "jaxresnet"}
    fastest = {}
    for kind in KINDS:
      rated = {name: rate(row, kind) for name, row in peers.items() if rate(row, kind)}
      if rated:
        best = max(rated, key=rated.get)
        fastest[kind] = {
          "framework": best,
          "img_s": rated[best],
          "ratio": _ratio(rate(ours, kind), rated[best]),
        }
    over = {n: {k: _ratio(rate(ours, k), rate(r, k)) for k in KINDS} for n, r in peers.items()}
    ratios.append(
      {
        "size": size,
        "dtype": dtype,
        "batch_size": batch,
        "jaxresnet_over": over,
        "jaxresnet_over_fastest_torch": fastest,
      }
    )
  return ratios


def _fmt(value: float | None, spec: str = ".1f") -> str:
  return "-" if value is None else format(value, spec)


def _compile_cell(part: dict) -> str:
  """XLA's compile time; for torch.compile, its first call cold / warm, or the cap it hit."""
  if "compile_cold_s" not in part:
    return _fmt(part.get("compile_s"))
  if "error" in part:
    return f"over its {part['compile_cap_s']:g} s cap"
  return f"{part['compile_cold_s']:.1f} / {part['compile_warm_s']:.1f}"


def _row_line(row: dict, dtype: str, meta: dict) -> str:
  """One framework's table line; its compile and memory cells are the train step's, else (a peer
  that only evaluates) the eval step's."""
  train = row.get("train") or row.get("eval", {})
  tflops = (rate(row, "train") or float("nan")) * row["flops_per_image_xla"] / 1e12
  peak = peak_tflops(dtype) if meta["jax_device"] != "cpu" else None
  mfu = f"{tflops:.3g} ({100 * tflops / peak:.1f}%)" if peak else f"{tflops:.3g}"
  mfu = "-" if tflops != tflops else mfu  # NaN: no FLOP count on this backend, or no rate.
  memory = next((train[k] for k in MEMORY_KEYS if k in train), None)
  return (
    f"| {row['size']} | {dtype} | {row['batch_size']} | {row['framework']} | "
    f"{_fmt(rate(row, 'train'))} | {_fmt(rate(row, 'eval'))} | {_fmt(rate(row, 'e2e'))} | "
    f"{_compile_cell(train)} | {_fmt(memory, '.0f')} | {mfu} |"
  )


def _ratio_lines(case: dict) -> list[str]:
  """The case's jaxresnet / PyTorch lines: one per PyTorch row, then the fastest one's."""
  head = f"| {case['size']} | {case['dtype']} | {case['batch_size']} |"
  lines = [
    f"{head} **jaxresnet / {name}** | **{_fmt(r['train'], '.2f')}** | {_fmt(r['eval'], '.2f')} "
    f"| {_fmt(r['e2e'], '.2f')} | | | |"
    for name, r in case["jaxresnet_over"].items()
  ]
  fastest = case["jaxresnet_over_fastest_torch"]
  cells = [
    f"{fastest[k]['ratio']:.2f} ({fastest[k]['framework']})"
    if fastest.get(k, {}).get("ratio") is not None
    else "-"
    for k in KINDS
  ]
  lines.append(
    f"{head} **jaxresnet / fastest torch** | **{cells[0]}** | {cells[1]} | {cells[2]} | | | |"
  )
  return lines


def format_table(results: list[dict], meta: dict) -> str:
  """A markdown table, with the jaxresnet/torch ratios under each case."""
  # How much of the CPUs other processes took during the rounds the table reports.
  busy = max(
    row[kind]["others_cpu_share_in_fastest"]
    for row in results
    for kind in KINDS
    if "others_cpu_share_in_fastest" in row.get(kind, {})
  )
  versions = ", ".join(f"{name} {meta[name]}" for name in VERSIONS)
  lines = [
    f"{meta['jax_device']} ({meta['cpu']}, {meta['cpu_cores_usable']} cores usable), "
    f"{git_label(meta)}, {meta['date']}; "
    f"other processes used up to {100 * busy:.0f}% of the CPUs during the reported rounds"
    + (": BUSY MACHINE, rerun on a quiet one" if busy > 0.1 else ""),
    "",
    versions,
    "",
    "Fastest of the interleaved rounds; compile time apart. Pure step: data resident on the "
    "device (jaxresnet: uint8 32x32, preprocessed in the step; torch: normalized float at the "
    "target size). End to end: each framework's input pipeline on the CIFAR-10 JPEGs. "
    "torch_compile rows: torch.compile(model) in channels_last, optimizer step eager; their "
    "compile s is the first call (compile + one step), cold / warm inductor cache.",
    "",
    TABLE_HEADER,
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  cases = group_cases(results)
  for case in case_ratios(results):
    rows = cases.pop((case["size"], case["dtype"], case["batch_size"]))
    lines += [_row_line(row, case["dtype"], meta) for row in rows.values()]
    lines += _ratio_lines(case)
  for rows in cases.values():  # Cases without a jaxresnet row: no ratios.
    lines += [_row_line(row, row["dtype"], meta) for row in rows.values()]
  return "\n".join(lines)


def write_text(path: str | pathlib.Path, text: str) -> None:
  """`text` at `path`, its folder made if need be."""
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(path).write_text(text)


def write_json(
  path: str | pathlib.Path, meta: dict, results: list[dict], ratios: list[dict] | None = None
) -> None:
  """`{"meta": meta, "results": results}` at `path` (and "ratios", `case_ratios`' list, where
  given), its folder made if need be."""
  saved = {"meta": meta, "results": results} | ({"ratios": ratios} if ratios is not None else {})
  write_text(path, json.dumps(saved, indent=1, default=str))


def write_table(path: str | pathlib.Path, table: str) -> None:
  """The markdown table at `path`, its folder made if need be."""
  write_text(path, table + "\n")
