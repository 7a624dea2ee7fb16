"""How the benchmarks time things on a shared machine.

Other processes only ever slow a round down, and PyTorch's OpenMP threads much more so than
XLA's, so the benchmarks time their candidates in interleaved rounds (load then hits all of them
alike), report the fastest round, and record from /proc/stat how much of the CPUs other processes
took meanwhile.
"""

import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import jax
import torch

T = TypeVar("T")


@dataclasses.dataclass
class Runner:
  """One timed thing: `run(n)` does n steps and returns once they are done."""

  framework: str  # "jaxresnet", "torch", "torch_cl", "torch_compile", ...
  kind: str  # "train" or "eval"
  run: Callable[[int], None]
  setup: dict
  rates: list = dataclasses.field(default_factory=list)
  cpu_s: list = dataclasses.field(default_factory=list)
  others: list = dataclasses.field(default_factory=list)  # Other processes' share of the CPUs.

  def summary(self) -> dict:
    """The fastest round's rate, with every round, its CPU use and the setup (compile, memory);
    a runner never timed (its compile past its cap) has its setup alone."""
    if not self.rates:
      return dict(self.setup)
    fastest = self.rates.index(max(self.rates))
    return {
      "img_s": self.rates[fastest],
      "median": statistics.median(self.rates),
      "rates": self.rates,
      "host_cpu_s_per_step": self.cpu_s,
      "others_cpu_share": self.others,
      "others_cpu_share_in_fastest": self.others[fastest],
      **self.setup,
    }


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


def timed(fn: Callable[[], T]) -> tuple[T, float]:
  """`fn()` and the wall-clock seconds it took."""
  start = time.perf_counter()
  result = fn()
  return result, time.perf_counter() - start


def interleaved_rounds(
  runners: list[Runner], warmup: int, repeats: int, steps_per_round: int, batch_size: int
) -> None:
  """Warms every runner up, then times `repeats` rounds of each in turn into its lists."""
  for runner in runners:
    runner.run(warmup)
  for _ in range(repeats):
    for runner in runners:
      counters = cpu_counters()
      _, seconds = timed(lambda r=runner: r.run(steps_per_round))
      end = cpu_counters()
      runner.rates.append(steps_per_round * batch_size / seconds)
      # Host CPU seconds (all threads) per step: on a CPU, how busy the cores were kept.
      runner.cpu_s.append((end[2] - counters[2]) / steps_per_round)
      runner.others.append(others_share(counters, end))


def measure_memory(runner: Runner, device: str, steps_per_round: int) -> None:
  """Peak device memory of one round, where the allocator reports it (GPU), into its setup."""
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
