"""Data parallelism: the jitted train step on 4 (forced host) CPU devices computes what 1 does."""

import json
import sys

import pytest

from tests import train_helpers as th


@pytest.mark.slow  # Two compilations in a 4-device subprocess: heavy for the fast tier.
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_train_steps_on_4_devices_match_1_device(dtype):
  """3 steps of the paper's SGD recipe, global batch 8, on a 4-device mesh vs a 1-device one.

  float64 shows they compute the same function: the only difference is the order of the
  reductions (BatchNorm statistics and gradients summed per device, then across devices), worth
  ~1e-16 per operation. float32: the same reordering, amplified by the backward pass through
  BatchNorm over 8 examples, measured at <= 2e-4 of each tensor's update; float32 itself is off
  from float64 by up to 2e-3 of the update on one device, so 1e-3 is within float32's own error.
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
      assert t["diff"] <= 1e-3 * t["update"], (name, t)
