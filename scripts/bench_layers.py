"""Where a CPU training step's time goes: every convolution of ResNet-18, jaxresnet against torch.

    python -m scripts.bench_layers                       # 224x224, batch 16: runs/bench_layers.*
    python -m scripts.bench_layers --size 32 --batch-size 64
    python -m scripts.bench_layers --compiler-option xla_cpu_use_onednn=true

For each distinct convolution of ResNet-18 at --size (the stem, each stage's 3x3, its strided
first 3x3 and its 1x1 downsample), it times the three pieces a training step runs: the forward,
the input gradient and the weight gradient; jaxresnet's (`jaxresnet/conv.py`, the arithmetic of
`models.Conv`, each piece its own jitted program) against torch's channels_last oneDNN kernels
(`torch.nn.functional.conv2d` and `aten.convolution_backward`, the fastest eager PyTorch row of
the benchmark). Rounds interleave every candidate, as in scripts/benchmark.py; the table gives
the fastest round's wall milliseconds, summed over the layers a step has of each shape, and the
host CPU seconds they used (how busy the cores were kept). BatchNorm, ReLU, max pool and the
optimizer are not in it: the whole step's rate is scripts/benchmark.py's.

`--compiler-option KEY=VALUE` compiles the jaxresnet pieces with that XLA debug option (e.g. a
library fusion flag; see docs/performance.md), so a flag's effect is measured per layer.
"""

# isort: off
import torchvision  # noqa: F401  (before TensorFlow, which jaxresnet may load)

# isort: on
import argparse
import json
import os
import pathlib
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxresnet import cli, conv  # noqa: E402
from scripts import bench_report  # noqa: E402
from scripts.bench_timing import Runner, interleaved_rounds  # noqa: E402

PIECES = ("forward", "input_grad", "weight_grad")


def resnet18_convolutions(size: int) -> list[dict]:
  """Each distinct convolution of torchvision's resnet18 at `size`: its input side, channels,
  kernel, stride, padding, and how many of it one forward pass has."""
  stem_out = (size + 2 * 3 - 7) // 2 + 1
  side = (stem_out + 2 - 3) // 2 + 1  # After the stride-2 max pool.
  layers = [dict(name="conv1", side=size, cin=3, cout=64, k=7, stride=2, pad=3, count=1)]
  width = 64
  for stage in range(1, 5):
    out = 64 * 2 ** (stage - 1)
    if stage > 1:  # The strided first 3x3 and the 1x1 downsample beside it.
      for name, k, pad in (("conv1", 3, 1), ("downsample", 1, 0)):
        layers.append(dict(name=f"layer{stage}.0.{name}", side=side, cin=width, cout=out, k=k,
                           stride=2, pad=pad, count=1))  # fmt: skip
      side = (side + 2 - 3) // 2 + 1
    same = 4 if stage == 1 else 3  # 3x3 out->out convolutions at stride 1.
    layers.append(
      dict(name=f"layer{stage} 3x3", side=side, cin=out, cout=out, k=3, stride=1, pad=1, count=same)
    )
    width = out
  return layers


def _compile(fn: Callable, args: tuple, options: dict) -> Callable:
  compiled = jax.jit(fn).lower(*args).compile(compiler_options=options or None)
  return lambda: jax.block_until_ready(compiled(*args))


def jax_pieces(layer: dict, batch: int, options: dict) -> dict[str, Callable[[], None]]:
  """jaxresnet's forward, input gradient and weight gradient of one convolution, compiled."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(
    rng.standard_normal((batch, layer["side"], layer["side"], layer["cin"]), np.float32)
  )
  kernel = jnp.asarray(
    rng.standard_normal((layer["k"], layer["k"], layer["cin"], layer["cout"]), np.float32) * 0.05
  )

  def forward(x, kernel):
    return conv.convolution(x, kernel, layer["stride"], layer["pad"], 1)

  g = jnp.asarray(rng.standard_normal(jax.eval_shape(forward, x, kernel).shape, np.float32))
  pieces = {
    "forward": _compile(forward, (x, kernel), options),
    "weight_grad": _compile(
      lambda x, k, g: jax.vjp(lambda k: forward(x, k), k)[1](g)[0], (x, kernel, g), options
    ),
  }
  if layer["name"] != "conv1":  # The stem's input gradient is never needed.
    pieces["input_grad"] = _compile(
      lambda x, k, g: jax.vjp(lambda x: forward(x, k), x)[1](g)[0], (x, kernel, g), options
    )
  return pieces


def torch_pieces(layer: dict, batch: int) -> dict[str, Callable[[], None]]:
  """torch's channels_last forward, input gradient and weight gradient of one convolution."""
  cl = torch.channels_last
  x = torch.randn(batch, layer["cin"], layer["side"], layer["side"]).contiguous(memory_format=cl)
  w = (torch.randn(layer["cout"], layer["cin"], layer["k"], layer["k"]) * 0.05).contiguous(
    memory_format=cl
  )
  s, p = layer["stride"], layer["pad"]
  g = torch.randn(torch.nn.functional.conv2d(x, w, None, s, p).shape).contiguous(memory_format=cl)

  def backward(mask: list[bool]) -> Callable[[], None]:
    def run() -> None:
      with torch.no_grad():
        torch.ops.aten.convolution_backward(
          g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask
        )

    return run

  def forward() -> None:
    with torch.no_grad():
      torch.nn.functional.conv2d(x, w, None, s, p)

  pieces = {"forward": forward, "weight_grad": backward([False, True, False])}
  if layer["name"] != "conv1":
    pieces["input_grad"] = backward([True, False, False])
  return pieces


def _runner(framework: str, name: str, piece: str, fn: Callable[[], None]) -> Runner:
  def run(n: int) -> None:
    for _ in range(n):
      fn()

  return Runner(framework, f"{name}/{piece}", run, {})


def measure(args: argparse.Namespace, options: dict) -> list[dict]:
  """Every layer's pieces in both frameworks, timed in interleaved rounds."""
  rows = []
  for layer in resnet18_convolutions(args.size):
    runners = []
    for framework, pieces in (
      ("jaxresnet", jax_pieces(layer, args.batch_size, options)),
      ("torch_cl", torch_pieces(layer, args.batch_size)),
    ):
      runners += [_runner(framework, layer["name"], p, fn) for p, fn in pieces.items()]
    interleaved_rounds(runners, args.warmup, args.repeats, args.steps, args.batch_size)
    row = dict(layer)
    for runner in runners:
      fastest = max(runner.rates)
      row[f"{runner.framework}/{runner.kind.split('/')[1]}"] = {
        "ms": 1e3 * args.batch_size / fastest,
        "cpu_ms": 1e3 * min(runner.cpu_s),
        "others_cpu_share": runner.others[runner.rates.index(fastest)],
      }
    rows.append(row)
    print(layer["name"], "done", flush=True)
  return rows


def table(rows: list[dict], meta: dict, args: argparse.Namespace) -> str:
  """Per layer and piece: wall ms summed over the step's layers of that shape, both frameworks
  and their ratio; then the totals, with CPU ms."""
  header = (
    f"{meta['cpu']} ({meta['cpu_cores_usable']} cores usable), ResNet-18 at "
    f"{args.size}x{args.size}, batch {args.batch_size}, float32, fastest of "
    f"{args.repeats} interleaved rounds; compiler options: {meta['compiler_options']}"
  )
  lines = [
    header,
    "",
    "| convolution | count | " + " | ".join(f"{p} jax / torch ms" for p in PIECES) + " |",
    "|---|---|" + "---|" * len(PIECES),
  ]
  totals = {
    (fw, p, unit): 0.0
    for fw in ("jaxresnet", "torch_cl")
    for p in PIECES
    for unit in ("ms", "cpu_ms")
  }
  for row in rows:
    cells = []
    for piece in PIECES:
      jax_cell, torch_cell = row.get(f"jaxresnet/{piece}"), row.get(f"torch_cl/{piece}")
      if jax_cell is None:
        cells.append("-")
        continue
      for fw, cell in (("jaxresnet", jax_cell), ("torch_cl", torch_cell)):
        for unit in ("ms", "cpu_ms"):
          totals[(fw, piece, unit)] += row["count"] * cell[unit]
      j, t = row["count"] * jax_cell["ms"], row["count"] * torch_cell["ms"]
      cells.append(f"{j:.1f} / {t:.1f} ({j / t:.2f}x)")
    lines.append(f"| {row['name']} | {row['count']} | " + " | ".join(cells) + " |")
  for unit, label in (("ms", "**all, wall ms**"), ("cpu_ms", "**all, CPU ms**")):
    cells = []
    for piece in PIECES:
      j, t = totals[("jaxresnet", piece, unit)], totals[("torch_cl", piece, unit)]
      cells.append(f"**{j:.0f} / {t:.0f} ({j / t:.2f}x)**")
    lines.append(f"| {label} | | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def parse_option(item: str) -> tuple[str, object]:
  key, sep, value = item.partition("=")
  if not sep or not key:
    raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE (e.g. xla_cpu_use_onednn=true)")
  lowered = value.lower()
  return key, True if lowered == "true" else False if lowered == "false" else value


def main(argv: list[str] | None = None) -> None:
  parser = cli.ArgumentParser(prog="python -m scripts.bench_layers", description=__doc__)
  parser.add_argument("--size", type=int, default=224, help="Input resolution.")
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--steps", type=int, default=3, help="Calls per timed round.")
  parser.add_argument("--repeats", type=int, default=5, help="Interleaved rounds.")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument(
    "--compiler-option",
    action="append",
    default=[],
    type=parse_option,
    metavar="KEY=VALUE",
    help="An XLA debug option for the jaxresnet pieces.",
  )
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--json", default=str(ROOT / "runs" / "bench_layers.json"))
  parser.add_argument("--table", default=str(ROOT / "runs" / "bench_layers.md"))
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  for name in ("size", "batch_size", "steps", "repeats", "threads"):
    if getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
  torch.set_num_threads(args.threads)
  options = dict(args.compiler_option)
  meta = bench_report.machine_info(args) | {"compiler_options": options or "none"}
  rows = measure(args, options)
  text = table(rows, meta, args)
  bench_report.write_text(args.json, json.dumps({"meta": meta, "rows": rows}, indent=1))
  bench_report.write_text(args.table, text)
  print(text, flush=True)


if __name__ == "__main__":
  cli.run_plain(main)
