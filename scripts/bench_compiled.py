"""The compiled PyTorch peers: the reference's own steps on a `torch.compile`d ResNet-18.

What is compiled: the model, by `torch.compile(model, mode=..., dynamic=False)` (inductor; C++
kernels on a CPU, Triton on a GPU), so its forward and, through AOTAutograd, its backward; in
channels_last, and under bf16 autocast where the case's dtype says so. The loss,
`zero_grad(set_to_none=True)` and the optimizer step stay eager: the peer runs
`torch_reference.train_step`/`eval_step` unchanged with the compiled model in place of the eager
one, so it differs from the "torch_cl" row by the compilation alone (compiling `optimizer.step`
as well would be a second graph with its own compile time; not done).

Compile times, cold and warm. benchmark.py runs every case inside `fresh_caches`, an empty
inductor (and Triton) cache of its own, so a peer's first call compiles cold: the FX graph,
AOTAutograd and autotuning caches all miss. Then `reset` drops the compiled code and the
in-memory caches, keeping the disk cache the cold compile filled, and a second first call
compiles warm. Both are the wall time of the first call: compilation plus one step. The warm
compile runs in the same process, so unlike a relaunch it does not import and start inductor
again; the first cold compile of a process does.

max-autotune (GPU, the 224x224 bfloat16 training step only, the target case) also compiles and
benchmarks Triton templates against cuDNN/cuBLAS for each forward convolution and matmul, the
longest compile here, and records the compiled graphs as CUDA graphs. Its compile is capped in
wall time (`--max-autotune-cap`): past the cap it is abandoned, and the row records the cap and
the error instead of rates.
"""

import argparse
import contextlib
import dataclasses
import signal
import time
from collections.abc import Iterator

import torch
import torch._inductor.utils

from scripts.bench_timing import Runner

MODES = ("default", "max-autotune")
MAX_AUTOTUNE_SIZES = (224,)  # The target case (>= 15,000 training images/s on one GPU).


class CompileCapExceeded(Exception):
  """A compile ran past its wall-time cap."""


@dataclasses.dataclass(frozen=True)
class Peer:
  """A compiled peer of one case: its row's name, torch.compile mode, steps, compile cap."""

  framework: str
  mode: str
  kinds: tuple[str, ...]
  cap_s: float | None = None


def case_peers(size: int, dtype: str, args: argparse.Namespace) -> list[Peer]:
  """The peers a case gets: --compile-modes at --compile-dtypes; max-autotune trains at 224."""
  if dtype not in args.compile_dtypes.split(","):
    return []
  peers = []
  if "default" in args.compile_modes:
    peers.append(Peer("torch_compile", "default", ("train", "eval")))
  if "max-autotune" in args.compile_modes and size in MAX_AUTOTUNE_SIZES:
    peers.append(
      Peer("torch_compile_max_autotune", "max-autotune", ("train",), args.max_autotune_cap)
    )
  return peers


def parse_modes(spec: str) -> list[str]:
  """'default,max-autotune' -> the list; '' -> none; an unknown mode is an argparse error."""
  modes = [m for m in spec.split(",") if m]
  unknown = set(modes) - set(MODES)
  if unknown:
    raise argparse.ArgumentTypeError(f"unknown mode(s) {sorted(unknown)}: choose from {MODES}")
  return modes


def describe(args: argparse.Namespace) -> dict:
  """What the compiled rows are, for the JSON's meta."""
  return {
    "compiled": "torch.compile(model, mode, dynamic=False): forward and backward (AOTAutograd)",
    "optimizer_step": "eager (torch_reference.train_step unchanged)",
    "memory_format": "channels_last",
    "backend": "inductor",
    "modes": args.compile_modes,
    "dtypes": args.compile_dtypes,
    "max_autotune_sizes": list(MAX_AUTOTUNE_SIZES),
    "max_autotune_cap_s": args.max_autotune_cap,
    "compile_cold_s": "first call, empty inductor cache of this process (compile + one step)",
    "compile_warm_s": "first call after torch.compiler.reset(), disk cache populated",
  }


@contextlib.contextmanager
def fresh_caches(folder: str) -> Iterator[None]:
  """An empty inductor and Triton cache under `folder`, so that first compiles are cold."""
  with torch._inductor.utils.fresh_cache(dir=folder):
    yield


def reset() -> None:
  """Forgets every compiled graph in this process, as a relaunch would; the disk cache stays."""
  torch.compiler.reset()
  torch._inductor.utils.clear_caches()


@contextlib.contextmanager
def wall_cap(seconds: float | None) -> Iterator[None]:
  """Raises CompileCapExceeded in the main thread after `seconds`, and every second after that:
  an alarm can land where the exception is dropped (a weakref callback, whose errors Python only
  prints, or code that catches and skips a failing autotuning choice)."""
  if not seconds:
    yield
    return

  def expire(signum, frame):
    raise CompileCapExceeded(f"compile exceeded its {seconds:g} s cap")

  previous = signal.signal(signal.SIGALRM, expire)
  signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def first_call(runner: Runner, key: str, cap_s: float | None) -> bool:
  """Times the runner's first call into setup[key]; False (and the error) if it hit the cap."""
  start = time.perf_counter()
  try:
    with wall_cap(cap_s):
      runner.run(1)
  except Exception as error:
    if not any(isinstance(e, CompileCapExceeded) for e in exception_chain(error)):
      raise
    runner.setup["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return False
  finally:
    runner.setup[key] = time.perf_counter() - start
  return True


def exception_chain(error: BaseException) -> Iterator[BaseException]:
  """The error and its causes: torch wraps what a compile raises (InductorError, ...)."""
  while error is not None:
    yield error
    error = error.__cause__ or error.__context__


def compile_runners(runners: list[Runner]) -> None:
  """Cold then warm compile of every compiled runner, each capped by its setup's
  `compile_cap_s`; one past its cap keeps the error in its setup and is not timed."""
  if not runners:
    return
  reset()  # No earlier case's graphs left to guard against.
  compiled = [r for r in runners if first_call(r, "compile_cold_s", r.setup.get("compile_cap_s"))]
  reset()
  for runner in compiled:
    first_call(runner, "compile_warm_s", runner.setup.get("compile_cap_s"))
