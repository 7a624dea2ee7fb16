"""`models.Conv`'s arithmetic: an NHWC/HWIO convolution with torch's padding and groups, in the
forms XLA:CPU runs fastest (docs/performance.md). Every form is the same function; results
differ by summation order only (float64 parity <= 1e-10 in tests/).

- `small_input`: where the input is smaller than the kernel (layer3/4 at 32x32), XLA:CPU swaps
  the convolution's operands into a form its fast kernels refuse and runs a naive loop (73% of a
  32x32 training step). There the convolution is one matmul over the kernel's shifted windows
  (im2col), batched over the groups: 3.6x faster.
- `convolution`: XLA's own convolution forward and input gradient; on the CPU its weight
  gradient is an im2col matmul (`_weight_gradient`) for outputs of at least 28x28, instead of
  XLA's weight-gradient convolution, whose operand and result transposes kept only one of two
  cores busy: the 224x224 batch-16 training step runs 16-18% faster, for about 2.1x XLA's
  temporary memory (1.2 GiB at batch 16). Other backends (cuDNN) keep XLA's throughout.
"""

import functools

import jax
import jax.numpy as jnp

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _windows(x: jax.Array, kh: int, kw: int, stride: int, out_h: int, out_w: int) -> jax.Array:
  """[..., out_h, out_w, kh * kw, C]: the kernel's shifted windows of a padded [..., H, W, C]."""
  s = stride
  return jnp.stack(
    [
      x[..., i : i + s * (out_h - 1) + 1 : s, j : j + s * (out_w - 1) + 1 : s, :]
      for i in range(kh)
      for j in range(kw)
    ],
    axis=-2,
  )  # (window, channel) flatten as the kernel's HWI does.


def _pad(x: jax.Array, padding: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))


def small_input(x: jax.Array, kernel: jax.Array, stride: int, padding: int, groups: int):
  """The convolution as one matmul over windows, batched over groups (see the module doc)."""
  kh, kw, _, features = kernel.shape
  x = _pad(x, padding)
  x = jnp.moveaxis(x.reshape(*x.shape[:3], groups, -1), 3, 0)  # (group, n, h, w, channel).
  n, out_h, out_w = x.shape[1], (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
  windows = _windows(x, kh, kw, stride, out_h, out_w).reshape(groups, n * out_h * out_w, -1)
  kernel = jnp.moveaxis(kernel.reshape(-1, groups, features // groups), 1, 0)  # Group-major.
  # Groups lead, so groups=1 is one plain matmul: an einsum with the groups in the middle made
  # XLA:CPU transpose both operands (a 15% slower 32x32 ResNet-18 step).
  y = (windows @ kernel).reshape(groups, n, out_h, out_w, -1)
  return jnp.moveaxis(y, 0, -2).reshape(n, out_h, out_w, features)


def _xla(x: jax.Array, kernel: jax.Array, stride: int, padding: int, groups: int) -> jax.Array:
  return jax.lax.conv_general_dilated(
    x, kernel, (stride, stride), ((padding, padding),) * 2, dimension_numbers=_DIMENSIONS,
    feature_group_count=groups,
  )  # fmt: skip


# Output pixels per image from which the matmul weight gradient beats XLA's on the CPU, measured
# per layer at 224: ahead from 112x112 to 28x28, behind at 14x14 (38 -> 52 ms), level at 7x7; a
# 32x32 step with it on its 16x16 to 4x4 layers ran 11% slower.
_MATMUL_FROM = 28 * 28


def convolution(x: jax.Array, kernel: jax.Array, stride: int, padding: int, groups: int):
  """The convolution of an input at least as large as the kernel (see the module doc)."""
  sizes = zip(x.shape[1:3], kernel.shape[:2], strict=True)
  out_h, out_w = ((n + 2 * padding - k) // stride + 1 for n, k in sizes)
  if jax.default_backend() == "cpu" and out_h * out_w >= _MATMUL_FROM:
    return _matmul_weight_gradient(x, kernel, stride, padding, groups)
  return _xla(x, kernel, stride, padding, groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _matmul_weight_gradient(x, kernel, stride, padding, groups):
  return _xla(x, kernel, stride, padding, groups)


def _forward(x, kernel, stride, padding, groups):
  return _xla(x, kernel, stride, padding, groups), (x, kernel)


def _backward(stride, padding, groups, residuals, g):
  """XLA's input gradient; the weight gradient as windows^T @ g (`_weight_gradient`)."""
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _xla(x, kernel, stride, padding, groups), x)
  dk = _weight_gradient(x, g, kernel.shape, stride, padding, groups)
  return input_vjp(g)[0], dk.astype(kernel.dtype)


def _weight_gradient(x, g, shape, stride, padding, groups) -> jax.Array:
  """dK[i, j, c, o] = sum over pixels p of window_ij(x)[p, c] g[p, o], per group: one matmul
  of the im2col matrix [pixels, kh * kw * C] with the cotangent [pixels, O]."""
  kh, kw, in_per_group, features = shape
  n, out_h, out_w, _ = g.shape
  pixels, taps = n * out_h * out_w, kh * kw
  windows = _windows(_pad(x, padding), kh, kw, stride, out_h, out_w)
  contract_pixels = ((0,), (0,))
  if groups == 1:  # One plain matmul (a batch axis of 1 would be another kernel).
    dk = jax.lax.dot_general(windows.reshape(pixels, -1), g.reshape(pixels, -1),
                             (contract_pixels, ((), ())))  # fmt: skip
    return dk.reshape(shape)
  windows = windows.reshape(pixels, taps, groups, in_per_group)
  g = g.reshape(pixels, groups, features // groups)
  dk = jax.lax.dot_general(windows, g, (contract_pixels, ((2,), (1,))))  # [G, taps, in, out/G].
  return jnp.transpose(dk, (1, 2, 0, 3)).reshape(shape)


_matmul_weight_gradient.defvjp(_forward, _backward)
