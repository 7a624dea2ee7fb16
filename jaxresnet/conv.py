"""`models.Conv`'s arithmetic: an NHWC/HWIO convolution with torch's padding and groups, in the
form XLA:CPU runs fastest (docs/performance.md). Every form is the same function; results
differ by summation order only (float64 parity <= 1e-10 in tests/).

A 1x1 convolution (the shortcuts' projections, the bottlenecks' 1x1s) is a matmul over pixels,
after the stride's slice: XLA:CPU's matmul beats its 1x1 convolution, whose weight gradient
transposes both operands (4-5x torch's time per downsample; ResNet-50 at 224 trains 24%
faster).

Where the input or the output is spatially smaller than the kernel (at 32x32: layer3.0's strided
3x3, whose 2x2 output makes its input gradient such a convolution, and every 3x3 after it),
XLA:CPU swaps the convolution's operands into a form its fast kernels refuse and runs a naive
loop (73% of a 32x32 training step before this module). There the convolution is one matmul over
the kernel's shifted windows (im2col), batched over the groups, and autodiff differentiates the
matmul. Everywhere else it is XLA's own convolution, forward and backward.
"""

import jax
import jax.numpy as jnp

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def convolution(x: jax.Array, kernel: jax.Array, stride: int, padding: int, groups: int):
  """The convolution of torch's `conv2d(x, kernel, stride=, padding=, groups=)`, NHWC/HWIO."""
  kh, kw = kernel.shape[:2]
  out_h, out_w = (
    (n + 2 * padding - k) // stride + 1 for n, k in zip(x.shape[1:3], (kh, kw), strict=True)
  )
  if kh == kw == 1 and padding == 0 and groups == 1:
    return x[:, ::stride, ::stride] @ kernel[0, 0]
  if min(x.shape[1], out_h) < kh or min(x.shape[2], out_w) < kw:
    return _windows_matmul(x, kernel, stride, padding, groups)
  return jax.lax.conv_general_dilated(
    x, kernel, (stride, stride), ((padding, padding),) * 2, dimension_numbers=_DIMENSIONS,
    feature_group_count=groups,
  )  # fmt: skip


def _windows_matmul(x: jax.Array, kernel: jax.Array, stride: int, padding: int, groups: int):
  """The convolution as one matmul over windows, batched over groups (see the module doc)."""
  kh, kw, _, features = kernel.shape
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  x = jnp.moveaxis(x.reshape(*x.shape[:3], groups, -1), 3, 0)  # (group, n, h, w, channel).
  n, out_h, out_w = x.shape[1], (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
  s = stride
  windows = jnp.stack(
    [
      x[..., i : i + s * (out_h - 1) + 1 : s, j : j + s * (out_w - 1) + 1 : s, :]
      for i in range(kh)
      for j in range(kw)
    ],
    axis=-2,
  ).reshape(groups, n * out_h * out_w, -1)  # (window, channel) flatten as the kernel's HWI does.
  kernel = jnp.moveaxis(kernel.reshape(-1, groups, features // groups), 1, 0)  # Group-major.
  # Groups lead, so groups=1 is one plain matmul: an einsum with the groups in the middle made
  # XLA:CPU transpose both operands (a 15% slower 32x32 ResNet-18 step).
  y = (windows @ kernel).reshape(groups, n, out_h, out_w, -1)
  return jnp.moveaxis(y, 0, -2).reshape(n, out_h, out_w, features)
