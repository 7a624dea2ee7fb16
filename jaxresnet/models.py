"""Flax ResNets that compute exactly what torchvision's ResNet family computes.

The whole family of `torchvision.models.resnet`: ResNet-18/34/50/101/152, ResNeXt-50/101 and
Wide ResNet-50/101, each a depth/width `functools.partial` of the one `ResNet` (see `MODELS`).

Layer for layer as torchvision, in NHWC: explicit torch padding (Flax's 'SAME' would pad the
stride-2 7x7 stem as (2, 3) instead of (3, 3)), torch's max pool (`pooling.py`), a projection
shortcut only where the shape changes, and torch's BatchNorm (see `BatchNorm`). Submodules are
named after torchvision's (`conv1`, `bn1`, `layer1`.., `0`, `downsample`, `fc`), so a
torchvision state-dict key and a Flax variable path are the same words.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxresnet import conv, pooling

Dtype = Any
ModuleDef = Callable[..., nn.Module]

# torchvision's inits, so training from scratch starts where torchvision would:
# kaiming_normal_(mode="fan_out", nonlinearity="relu") for convolutions, and nn.Linear's
# default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the head's kernel and bias.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def dense_bias_init(fan_in: int) -> nn.initializers.Initializer:
  """nn.Linear's bias init, which depends on the layer's fan-in."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class Conv(nn.Module):
  """A bias-free NHWC convolution with nn.Conv's parameter ("kernel", HWIO) and torch's padding.

  `groups` splits the channels as torch's `groups` (ResNeXt's 3x3): the kernel is
  (kh, kw, in / groups, features), and output channel o sees input group o // (features / groups).
  The arithmetic is `jaxresnet/conv.py`'s, in the form XLA:CPU runs fastest: a matmul over
  windows where the input or output is smaller than the kernel, XLA's convolution elsewhere.
  """

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: int = 0
  groups: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = conv_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    shape = (kh, kw, x.shape[-1] // self.groups, self.features)
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return conv.convolution(x, kernel, self.strides, self.padding, self.groups)


class BatchNorm(nn.Module):
  """torch.nn.BatchNorm2d in Flax.

  `nn.BatchNorm` normalises like torch but feeds the *biased* batch variance into the running
  variance; torch feeds the unbiased one (times n / (n - 1)). The difference compounds over a
  fine-tuning run, so this module follows torch. Statistics are computed in at least float32,
  whatever the compute dtype, and the running averages follow torch's momentum 0.1
  (`momentum=0.9` in Flax's convention of "weight of the old value").
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  frozen: bool = False  # Eval mode always, and no gradient to the affine parameters.
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
    if self.frozen:
      train = False
      scale, bias = jax.lax.stop_gradient(scale), jax.lax.stop_gradient(bias)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), self.param_dtype)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), self.param_dtype)

    stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
    x32 = x.astype(stats_dtype)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)  # Biased: what torch normalises with.
      if not self.is_initializing():
        n = x.size // features
        momentum = self.momentum
        ra_mean.value = momentum * ra_mean.value + (1 - momentum) * mean
        ra_var.value = momentum * ra_var.value + (1 - momentum) * var * (n / (n - 1))
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (x32 - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(self.dtype)


class Unit(nn.Module):
  """Fields shared by the shortcut and the blocks: width, stride, and the conv/BN factories."""

  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef


class Downsample(Unit):
  """torchvision's projection shortcut: `downsample.0` (1x1 conv) and `downsample.1` (BN)."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = self.conv(self.features, (1, 1), self.strides, padding=0, name="0")(x)
    return self.norm(name="1")(x, train)


class BasicBlock(Unit):
  """Two 3x3 convolutions (ResNet-18/34)."""

  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.conv(self.features, (3, 3), self.strides, padding=1, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y, train))
    y = self.conv(self.features, (3, 3), 1, padding=1, name="conv2")(y)
    y = self.norm(name="bn2")(y, train)
    return nn.relu(y + _shortcut(self, x, y, train))


class Bottleneck(Unit):
  """1x1, 3x3, 1x1 convolutions (ResNet-50 and up), with the stride on the 3x3 as torchvision.

  ResNeXt groups the 3x3 and Wide ResNet widens it: as torchvision's, its width is
  int(features * base_width / 64) * groups (resnext50_32x4d: groups 32, base_width 4), and the
  block's output stays features * 4.
  """

  groups: int = 1
  base_width: int = 64
  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    width = self.features * self.base_width // 64 * self.groups
    y = self.conv(width, (1, 1), 1, padding=0, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y, train))
    y = self.conv(width, (3, 3), self.strides, padding=1, groups=self.groups, name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y, train))
    y = self.conv(self.features * self.expansion, (1, 1), 1, padding=0, name="conv3")(y)
    y = self.norm(name="bn3")(y, train)
    return nn.relu(y + _shortcut(self, x, y, train))


def _shortcut(block: Unit, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
  """The identity, or torchvision's projection where the block changes the shape."""
  if x.shape == y.shape:
    return x
  return Downsample(y.shape[-1], block.strides, block.conv, block.norm, name="downsample")(x, train)


class Stage(nn.Module):
  """torchvision's `layerN`: blocks named "0", "1", ... like an nn.Sequential."""

  block_cls: ModuleDef
  num_blocks: int
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_blocks):
      strides = self.strides if i == 0 else 1
      x = self.block_cls(self.features, strides, self.conv, self.norm, name=str(i))(x, train)
    self.sow("intermediates", "output", x)
    return x


class ResNet(nn.Module):
  """torchvision's ResNet on NHWC images; returns logits.

  `dtype` is the compute dtype (float32, bfloat16, or float64 under `jax_enable_x64`);
  parameters and BatchNorm statistics stay in `param_dtype`. The stem's and each stage's output
  are sown into the "intermediates" collection (`stem`, `layerN/output`), so parity tests can
  compare every stage.

  Fine-tuning controls (they change training only; evaluation is the same network):
    freeze: the stages up to this one (`FREEZE`) are fixed, as torch's `requires_grad_(False)`
      plus `.eval()` on them: their BatchNorm uses its running statistics, and
      `stop_gradient` on their output means no backward pass runs through them at all.
    batchnorm: "frozen" puts every BatchNorm in eval mode and stops the gradient to its affine
      parameters (torchvision's FrozenBatchNorm2d, the usual choice on small data sets).
  """

  stage_sizes: Sequence[int]
  block_cls: ModuleDef  # BasicBlock, Bottleneck, or a partial of it with groups / base_width.
  num_classes: int = 1000
  freeze: str = "none"
  batchnorm: str = "train"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(Conv, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(BatchNorm, frozen=self.batchnorm == "frozen", dtype=self.dtype,
                             param_dtype=self.param_dtype)  # fmt: skip
    frozen = frozen_stages(self.freeze)

    def stage_output(name: str, y: jax.Array) -> jax.Array:
      return jax.lax.stop_gradient(y) if name in frozen else y

    x = conv(64, (7, 7), 2, padding=3, name="conv1")(x.astype(self.dtype))
    x = nn.relu(norm(name="bn1")(x, train and "stem" not in frozen))
    x = pooling.max_pool(x, 3, 2, 1)
    x = stage_output("stem", x)
    self.sow("intermediates", "stem", x)
    for i, num_blocks in enumerate(self.stage_sizes):
      strides, name = (1 if i == 0 else 2), f"layer{i + 1}"
      stage = Stage(self.block_cls, num_blocks, 64 * 2**i, strides, conv, norm, name=name)
      x = stage_output(name, stage(x, train and name not in frozen))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=dense_kernel_init,
      bias_init=dense_bias_init(x.shape[-1]),
      name="fc",
    )(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))  # Loss math in >= float32.


def _bottleneck(groups: int, base_width: int) -> ModuleDef:
  """The Bottleneck of torchvision's `groups` and `width_per_group` (ResNeXt, Wide ResNet)."""
  return functools.partial(Bottleneck, groups=groups, base_width=base_width)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)
ResNeXt50_32x4d = functools.partial(ResNet50, block_cls=_bottleneck(32, 4))
ResNeXt101_32x8d = functools.partial(ResNet101, block_cls=_bottleneck(32, 8))
ResNeXt101_64x4d = functools.partial(ResNet101, block_cls=_bottleneck(64, 4))
WideResNet50_2 = functools.partial(ResNet50, block_cls=_bottleneck(1, 128))
WideResNet101_2 = functools.partial(ResNet101, block_cls=_bottleneck(1, 128))

DTYPES = ("float32", "bfloat16")  # config.dtype: the compute dtype of a training run.
# The network's parts from the input up: torchvision's conv1 + bn1 (the stem), then its stages.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
# config.freeze: nothing, the parts up to a stage, or every part but the head (a linear probe).
FREEZE = ("none", "stem", "layer1", "layer2", "layer3", "head_only")
BATCHNORM = ("train", "frozen")  # config.batchnorm.
# torchvision's names and order (torchvision.models.resnet.__all__).
MODELS: dict[str, Callable[..., ResNet]] = {
  "resnet18": ResNet18,
  "resnet34": ResNet34,
  "resnet50": ResNet50,
  "resnet101": ResNet101,
  "resnet152": ResNet152,
  "resnext50_32x4d": ResNeXt50_32x4d,
  "resnext101_32x8d": ResNeXt101_32x8d,
  "resnext101_64x4d": ResNeXt101_64x4d,
  "wide_resnet50_2": WideResNet50_2,
  "wide_resnet101_2": WideResNet101_2,
}


def frozen_stages(freeze: str) -> tuple[str, ...]:
  """The `STAGES` that config.freeze fixes, in order."""
  if freeze not in FREEZE:
    raise ValueError(f"Unknown freeze {freeze!r}: choose one of {list(FREEZE)}.")
  return STAGES[: FREEZE.index(freeze)]


def stage_of(path: Sequence[str]) -> str:
  """The `STAGES` entry, or "head", that owns the parameter at `path` ("layer1", "0", ...)."""
  top = path[0]
  return "stem" if top in ("conv1", "bn1") else "head" if top == "fc" else top


def create_model(
  arch: str,
  num_classes: int,
  dtype: Dtype = "float32",
  freeze: str = "none",
  batchnorm: str = "train",
) -> ResNet:
  """Builds a ResNet by torchvision's name, with a clear error for an unknown one.

  Args:
    arch: a key of `MODELS`.
    num_classes: the head's size.
    dtype: the compute dtype, by name ("float32", "bfloat16", "float64") or as a dtype;
      parameters stay float32.
    freeze, batchnorm: the fine-tuning controls (see `ResNet`); inference ignores them.
  """
  if arch not in MODELS:
    raise ValueError(f"Unknown model {arch!r}: choose one of {list(MODELS)}.")
  if batchnorm not in BATCHNORM:
    raise ValueError(f"Unknown batchnorm {batchnorm!r}: choose one of {list(BATCHNORM)}.")
  frozen_stages(freeze)  # Validates it.
  return MODELS[arch](num_classes=num_classes, dtype=jnp.dtype(dtype), freeze=freeze,
                      batchnorm=batchnorm)  # fmt: skip


def init_variables(model: ResNet, rng: jax.Array) -> dict[str, Any]:
  """torchvision's initialisation ({"params", "batch_stats"}), in one compiled call.

  One compilation (10-20 s on 2 CPU cores, nearly all of it the ~60 random initialisers' kernels)
  instead of ~150 small eager ones. The variables depend on neither the compute dtype nor the
  fine-tuning controls (parameters stay `param_dtype`; `init` runs in eval mode), so they are
  drawn by the float32, unfrozen twin of `model`: a float64 or bfloat16 run, a frozen one and
  every seed of a comparison reuse one compilation per architecture and head.
  """
  return _init_variables(model.clone(dtype=jnp.float32, freeze="none", batchnorm="train"), rng)


@functools.partial(jax.jit, static_argnums=0)
def _init_variables(model: ResNet, rng: jax.Array) -> dict[str, Any]:
  # The variables do not depend on the image size: a small dummy image serves every run.
  return model.init(rng, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
