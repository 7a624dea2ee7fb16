"""Data parallelism: the jitted train step on 4 (forced host) CPU devices computes what 1 does;
how many devices a CPU is split into, and that the split takes effect."""

import json
import os
import sys

import pytest

from jaxresnet import errors, parallel
from tests import train_helpers as th


@pytest.mark.slow  # Two compilations in a 4-device subprocess: heavy for the fast tier.
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_train_steps_on_4_devices_match_1_device(dtype):
  """3 steps of the paper's SGD recipe, global batch 8, on a 4-device mesh vs a 1-device one.

  float64 shows they compute the same function: the only difference is the order of the
  reductions (BatchNorm statistics and gradients summed per device, then across devices), worth
  ~1e-16 per operation. float32: the same reordering, amplified by the backward pass through
  BatchNorm over 8 examples. float32 itself is off from float64 by up to 2.1e-3 of a tensor's
  update, on 1 device and on 4 alike (measured in one x64 process), so the two float32 runs may
  differ by about twice that; measured 2e-4 to 4.8e-3 as the code's summation order changed
  (4.8e-3 since pooling.max_pool's backward sums overlapping windows in its own order). Hence
  1e-2, as the multi-process test: a data or gradient bug (a device reading another's slice,
  gradients not summed across devices) moves a tensor by ~1 of its update.
  """
  env = dict(th.four_cpu_devices(), JAX_ENABLE_X64=str(int(dtype == "float64")))
  result = th.run([sys.executable, "-m", "tests.mesh_parity", dtype], env)
  assert result.returncode == 0, result.stderr[-5000:]
  report = json.loads(result.stdout)
  assert report["devices"] == 4
  assert report["dtypes"] == [dtype]  # Parameters, statistics and (checked there) the loss.
  tensors = report["tensors"]
  assert len(tensors) == 102  # ResNet-18: 62 parameters, mean and var of 20 BatchNorms.
  worst = {}
  for name, t in tensors.items():
    assert t["update"] > 0, name  # Every tensor moved, so the comparison means something.
    worst[name] = t["diff"] / t["update"]
  name = max(worst, key=worst.get)
  print(f"{dtype}: max ||p4 - p1|| / ||p1 - p0|| = {worst[name]:.2e} ({name})")
  if dtype == "float64":
    for name, t in tensors.items():
      assert t["diff"] <= 1e-10 * t["norm"], (name, t)
      assert t["diff"] <= 1e-10 * t["update"], (name, t)
  else:
    for name, t in tensors.items():
      assert t["diff"] <= 1e-2 * t["update"], (name, t)


@pytest.mark.parametrize(
  "cores, requested, size, batch_sizes, expected",
  [
    (2, 0, 224, [16, 256], 2),  # The paper's size: one device per core.
    (2, 0, 64, [64, 256], 2),  # 32 images of 64x64 per device: measured faster.
    (2, 0, 32, [64, 256], 1),  # 32 of 32x32 per device: measured slower, so one device.
    (2, 0, 32, [128, 256], 1),  # 64 of 32x32: still slower (measured at batch 128).
    (8, 0, 224, [12, 256], 4),  # The most devices that divide every batch, at most one per core.
    (2, 0, 224, [15], 1),  # An odd batch stays whole.
    (2, 3, 32, [64], 3),  # Asked for: kept, whatever the rule says.
  ],
)
def test_cpu_device_count(monkeypatch, cores, requested, size, batch_sizes, expected):
  monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(cores)))
  assert parallel.cpu_device_count(requested, size, batch_sizes) == expected


def test_cpu_device_count_refuses_a_negative_request():
  with pytest.raises(errors.UserError, match=r"config.cpu_devices must be >= 0"):
    parallel.cpu_device_count(-1, 224, [16])


_SPLIT = (
  "import jax; from jaxresnet import parallel; {}parallel.split_cpu(2); print(jax.device_count())"
)


@pytest.mark.parametrize(
  "extra, before, expected",
  [
    ({}, "", 2),  # Before JAX starts: two CPU devices.
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, "", 3),  # The user's count.
    ({"JAX_NUM_CPU_DEVICES": "3"}, "", 3),
    ({}, "jax.numpy.zeros(1); ", 1),  # JAX already running: its one device stays, no error.
  ],
)
def test_split_cpu(extra, before, expected):
  """In a fresh process: parallel.split_cpu(2) takes effect, or leaves the user's count and a
  running backend's devices alone."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
  env.update(extra, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {extra.get('XLA_FLAGS', '')}"
  result = th.run([sys.executable, "-c", _SPLIT.format(before)], env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split()[-1] == str(expected)
