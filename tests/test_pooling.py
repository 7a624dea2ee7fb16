"""pooling.max_pool: torch's max_pool2d and its gradient, ties included (a ReLU's zeros)."""

import jax
import numpy as np
import pytest
import torch

from jaxresnet import pooling


@pytest.mark.parametrize(
  "shape, window, stride, padding",
  [
    ((2, 112, 112, 8), 3, 2, 1),  # ResNet's stem pool at 224.
    ((3, 9, 7, 4), 3, 2, 1),  # Odd and non-square: the last window hangs over the padding.
    ((2, 8, 8, 3), 2, 2, 0),  # Windows that do not overlap.
    ((2, 10, 10, 3), 3, 1, 1),  # Every pixel in up to 9 windows.
  ],
)
def test_max_pool_equals_torch_in_float64(shape, window, stride, padding):
  rng = np.random.default_rng(0)
  x = np.maximum(rng.standard_normal(shape), 0.0)  # Half zeros: windows full of ties.
  x[0, :3, :3, 0] = 0.5  # An all-equal window of a positive value too.
  x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
  expected = torch.nn.functional.max_pool2d(x_torch, window, stride, padding)
  g = rng.standard_normal(expected.shape)  # NCHW.
  expected.backward(torch.from_numpy(g))
  with jax.enable_x64(True):
    actual, vjp = jax.vjp(lambda x: pooling.max_pool(x, window, stride, padding), x)
    actual, dx = np.asarray(actual), np.asarray(vjp(np.transpose(g, (0, 2, 3, 1)))[0])
  np.testing.assert_array_equal(actual, expected.detach().permute(0, 2, 3, 1).numpy())
  # Each input gets the cotangents of the windows whose first maximum it is: the same terms as
  # torch, summed in another order where windows overlap.
  reference = x_torch.grad.permute(0, 2, 3, 1).numpy()
  assert np.abs(dx - reference).max() <= 1e-14 * np.abs(reference).max()
  assert np.count_nonzero(reference) > 0
