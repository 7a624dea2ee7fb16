"""Forward parity of converted weights against torchvision's own models, and converter errors.

Tolerances: float64 proves the two compute the same function (differences are pure rounding at
~1e-16 per operation, so <= 1e-10 relative). float32 bounds the rounding of two different
convolution implementations summing ~10^4 products in different orders: ~1e-7 per op,
accumulated over 20-50 layers, stays well under 1e-4 of the largest activation.
"""

import copy
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from convert import layout, torch_to_flax
from jaxresnet import errors, models, network, pretrained
from tests import torch_utils

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


pytestmark = pytest.mark.usefixtures("exact_matmuls")


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
  return torch_utils.parity_inputs(num_real=4, num_noise=4)


@pytest.fixture(scope="module")
def converted_resnet18(tmp_path_factory) -> tuple[torch.nn.Module, dict]:
  """torchvision's resnet18 with randomised BatchNorm, converted through the CLI once."""
  torch_model = torch_utils.randomized_torchvision("resnet18")
  return torch_model, torch_utils.convert_with_cli(
    torch_model, tmp_path_factory.mktemp("r18"), "resnet18"
  )


@pytest.fixture
def resnet18(converted_resnet18) -> tuple[torch.nn.Module, dict]:
  """A fresh copy of that torch model (train mode changes its statistics) and its variables."""
  torch_model, variables = converted_resnet18
  return copy.deepcopy(torch_model), variables


def flax_outputs(arch, variables, images, dtype=jnp.float32, train=False):
  model = models.create_model(arch, variables["params"]["fc"]["bias"].shape[0], dtype)
  logits, state = model.apply(
    variables, torch_utils.to_nhwc(images), train=train, mutable=["intermediates", "batch_stats"]
  )
  sown = state["intermediates"]
  outputs = {k: sown[k]["output"][0] if k != "stem" else sown[k][0] for k in STAGES}
  return {"logits": logits, **outputs}, state.get("batch_stats")


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
  "arch", ["resnet18", pytest.param("resnet34", marks=SLOW), pytest.param("resnet50", marks=SLOW)]
)
def test_eval_float32_matches_torchvision_per_stage(arch, inputs, tmp_path):
  torch_model = torch_utils.randomized_torchvision(arch)
  variables = torch_utils.convert_with_cli(torch_model, tmp_path, arch)
  expected = torch_utils.stage_outputs(torch_model, inputs)
  actual, _ = flax_outputs(arch, variables, inputs)
  for key in ("logits", *STAGES):
    diff = np.abs(np.asarray(actual[key]) - expected[key]).max()
    assert diff <= 1e-4 * max(1.0, np.abs(expected[key]).max()), (arch, key, diff)


def train_passes(arch, torch_model, variables, images, dtype):
  """Three train-mode passes in both frameworks: last logits and the BN statistics."""
  torch_model.train()
  with torch.no_grad():
    for _ in range(3):
      expected = torch_model(images).numpy()
  model = models.create_model(arch, 1000, dtype)
  state = {"batch_stats": variables["batch_stats"]}
  for _ in range(3):
    logits, state = model.apply(
      {"params": variables["params"], **state},
      torch_utils.to_nhwc(images),
      train=True,
      mutable=["batch_stats"],
    )
  return logits, expected, state["batch_stats"], torch_model.state_dict()


def assert_train_parity(arch, torch_model, variables, images, dtype, tolerance) -> float:
  """Asserts the logits and every BatchNorm statistic within `tolerance`; the largest error."""
  logits, expected, batch_stats, torch_sd = train_passes(
    arch, torch_model, variables, images, dtype
  )
  errors = {"logits": torch_utils.relative_error(logits, expected)}
  for path, value in layout.flatten({"batch_stats": batch_stats}):
    torch_value = torch_sd[layout.torch_key(path)].numpy()
    errors[path] = torch_utils.relative_error(value, torch_value)
  worst = max(errors, key=errors.get)
  assert errors[worst] <= tolerance, (worst, errors[worst])
  return errors[worst]


@pytest.mark.slow  # Heavy for the fast tier; float64 exactness of the forward stays fast.
def test_train_float32_matches_torchvision(inputs, resnet18):
  torch_model, variables = resnet18
  assert_train_parity("resnet18", torch_model, variables, inputs, jnp.float32, 1e-5)


def assert_float64_exact(arch, size, train, tmp_path) -> dict[str, np.ndarray]:
  """A randomized torchvision `arch` converted through the CLI, in float64 on 4 real and 4 noise
  images of `size`: logits and every stage within 1e-10 in eval mode, and, when `train`, the
  logits and every BatchNorm statistic after 3 train-mode passes. Returns the eval outputs."""
  images = torch_utils.parity_inputs(num_real=4, num_noise=4, size=size).double()
  torch_model = torch_utils.randomized_torchvision(arch).double()
  with jax.enable_x64(True):
    variables = torch_utils.convert_with_cli(torch_model, tmp_path, arch)
    assert variables["params"]["conv1"]["kernel"].dtype == np.float64
    expected = torch_utils.stage_outputs(torch_model, images)
    actual, _ = flax_outputs(arch, variables, images, dtype=jnp.float64)
    errors = {k: torch_utils.relative_error(actual[k], expected[k]) for k in ("logits", *STAGES)}
    assert max(errors.values()) <= 1e-10, errors
    report = f"\n{arch} float64 at {size}x{size}: eval {max(errors.values()):.1e}"
    if train:
      error = assert_train_parity(arch, torch_model, variables, images, jnp.float64, 1e-10)
      report += f", train {error:.1e}"
  print(report)
  return actual


@pytest.mark.slow  # test_small_inputs_are_exact_in_float64 proves it per block type, faster.
@pytest.mark.parametrize("arch", ["resnet18"])
def test_float64_is_exact(arch, tmp_path):
  """At 112x112, a quarter of 224's compute with the same paths: lax's convolution at every
  stage (layer4's 3x3 sees 4x4, no smaller than its kernel; at 32x32 the matmul takes over)."""
  assert_float64_exact(arch, 112, True, tmp_path)


@pytest.mark.parametrize(
  "arch, train",
  # Slow: in the fast tier, test_grad_parity's float64 test at 32x32 (forward and backward in
  # train mode, on both conv paths) proves resnet18 exact.
  [
    pytest.param(*case, marks=SLOW)
    for case in [
      ("resnet18", True),
      ("resnet101", False),
      ("resnext50_32x4d", True),
      ("wide_resnet50_2", False),
    ]
  ],
)
def test_small_inputs_are_exact_in_float64(arch, train, tmp_path):
  """32x32 (CIFAR at its own size) runs both of models.Conv's paths: the 3x3 convolutions up to
  layer2 (8x8 and 4x4 inputs) as convolutions, from layer3.0 on (a 2x2 output, then 2x2 and 1x1
  inputs, smaller than the kernel) as a matmul over windows. One architecture per block: basic,
  bottleneck, grouped (ResNeXt) and wide bottleneck; the fast tier has the grouped convolution's
  own test. Train mode (logits and every BatchNorm statistic) on the basic and grouped blocks: the
  bottleneck's and the wide one's differ from those only in widths, which eval mode proves."""
  actual = assert_float64_exact(arch, 32, train, tmp_path)
  sizes = [actual[f"layer{i}"].shape[1:3] for i in (2, 3, 4)]
  assert sizes == [(4, 4), (2, 2), (1, 1)]  # layer3.0's 3x3 maps 4x4 to 2x2; then <= 2x2.


@pytest.mark.parametrize("strides", [1, 2])
def test_pointwise_conv_equals_torch_conv2d_in_float64(strides):
  """A 1x1 models.Conv is a matmul over the stride's pixels (conv.py): output and both
  gradients equal torch's conv2d and its autograd, on an odd side (7: 4 outputs at stride 2)."""
  rng = np.random.default_rng(0)
  images, weight = rng.standard_normal((2, 7, 7, 8)), rng.standard_normal((12, 8, 1, 1))
  torch_images = torch.from_numpy(images).permute(0, 3, 1, 2).requires_grad_()
  torch_weight = torch.from_numpy(weight).requires_grad_()
  expected = torch.nn.functional.conv2d(torch_images, torch_weight, stride=strides)
  cotangent = rng.standard_normal(expected.shape)  # NCHW.
  expected.backward(torch.from_numpy(cotangent))
  with jax.enable_x64(True):
    conv = models.Conv(12, (1, 1), strides, dtype=jnp.float64, param_dtype=jnp.float64)
    kernel = layout.to_flax(("params", "conv", "kernel"), weight)

    def apply(kernel, images):
      return conv.apply({"params": {"kernel": kernel}}, images)

    jaxpr = str(jax.make_jaxpr(jax.grad(lambda *a: apply(*a).sum(), (0, 1)))(kernel, images))
    assert "conv_general_dilated" not in jaxpr
    actual, vjp = jax.vjp(apply, kernel, images)
    d_kernel, d_images = (np.asarray(d) for d in vjp(np.transpose(cotangent, (0, 2, 3, 1))))
    actual = np.asarray(actual)
  assert torch_utils.relative_error(actual, expected.detach().permute(0, 2, 3, 1).numpy()) <= 1e-14
  assert (
    torch_utils.relative_error(
      layout.to_torch(("params", "conv", "kernel"), d_kernel), torch_weight.grad.numpy()
    )
    <= 1e-13
  )
  d_images = np.transpose(d_images, (0, 3, 1, 2))
  assert torch_utils.relative_error(d_images, torch_images.grad.numpy()) <= 1e-13


@pytest.mark.parametrize("size", [56, 4, 2])
@pytest.mark.parametrize("strides", [1, 2])
def test_grouped_conv_equals_torch_conv2d_in_float64(size, strides):
  """models.Conv with groups in each of its forms (conv.py), output and both gradients, against
  torch's conv2d(groups=4) and its autograd: a 3x3 on a 56x56 input is a lax convolution; on 4x4
  too at stride 1, but a matmul over windows at stride 2 (its 2x2 output is smaller than the
  kernel); on 2x2 a matmul over windows batched over groups."""
  groups, in_features, features = 4, 8, 12
  windows = size < 3 or (size + 2 - 3) // strides + 1 < 3
  rng = np.random.default_rng(0)
  images = rng.standard_normal((2, size, size, in_features))
  weight = rng.standard_normal((features, in_features // groups, 3, 3))  # torch's OIHW.
  torch_images = torch.from_numpy(images).permute(0, 3, 1, 2).requires_grad_()
  torch_weight = torch.from_numpy(weight).requires_grad_()
  expected = torch.nn.functional.conv2d(
    torch_images, torch_weight, stride=strides, padding=1, groups=groups
  )
  cotangent = rng.standard_normal(expected.shape)  # NCHW.
  expected.backward(torch.from_numpy(cotangent))
  with jax.enable_x64(True):
    conv = models.Conv(
      features,
      (3, 3),
      strides,
      padding=1,
      groups=groups,
      dtype=jnp.float64,
      param_dtype=jnp.float64,
    )
    shape = jax.eval_shape(conv.init, jax.random.key(0), images)["params"]["kernel"].shape
    kernel = layout.to_flax(("params", "conv", "kernel"), weight)
    assert shape == kernel.shape == (3, 3, in_features // groups, features)

    def apply(kernel, images):
      return conv.apply({"params": {"kernel": kernel}}, images)

    jaxpr = str(jax.make_jaxpr(jax.grad(lambda *a: apply(*a).sum(), (0, 1)))(kernel, images))
    assert ("conv_general_dilated" in jaxpr) == (not windows)
    actual, vjp = jax.vjp(apply, kernel, images)
    d_kernel, d_images = vjp(np.transpose(cotangent, (0, 2, 3, 1)))
  assert torch_utils.relative_error(actual, expected.detach().permute(0, 2, 3, 1).numpy()) <= 1e-14
  grads = {"weight": (layout.to_torch(("params", "conv", "kernel"), d_kernel), torch_weight.grad),
           "input": (np.transpose(d_images, (0, 3, 1, 2)), torch_images.grad)}  # fmt: skip
  for name, (ours, theirs) in grads.items():
    assert torch_utils.relative_error(ours, theirs.numpy()) <= 1e-13, name


@pytest.mark.slow  # The fast tier checks every stage's shape at 32x32 (small inputs).
def test_odd_input_size_keeps_torch_shapes(resnet18):
  """97x97: 'SAME' padding would give 49x49 after the stem conv, torch's pad 3 gives 49 too,
  but the pool and later strides differ; every stage must match torch's shape and values."""
  images = torch_utils.parity_inputs(num_real=2, num_noise=2, size=97)
  torch_model, variables = resnet18
  expected = torch_utils.stage_outputs(torch_model, images)
  actual, _ = flax_outputs("resnet18", variables, images)
  for key in ("logits", *STAGES):
    assert actual[key].shape == expected[key].shape, key
    diff = np.abs(np.asarray(actual[key]) - expected[key]).max()
    assert diff <= 1e-4 * max(1.0, np.abs(expected[key]).max()), key


@pytest.mark.slow  # Heavy for the fast tier.
def test_bfloat16_compute_stays_close(inputs, resnet18):
  """bf16 has an 8-bit mantissa (~4e-3 per rounding): 2e-2 relative leaves room for ~20
  layers of it; the prototype measured ~5e-3."""
  _, variables = resnet18
  f32, _ = flax_outputs("resnet18", variables, inputs)
  bf16, _ = flax_outputs("resnet18", variables, inputs, dtype=jnp.bfloat16)
  assert bf16["logits"].dtype == jnp.float32  # Logits come back in float32 for the loss.
  assert torch_utils.relative_error(bf16["logits"], f32["logits"]) <= 2e-2
  agreement = np.mean(np.argmax(bf16["logits"], -1) == np.argmax(f32["logits"], -1))
  assert agreement >= 0.99


def test_fresh_head_is_torch_linear_init(tmp_path):
  torch_model = torch_utils.randomized_torchvision("resnet18")
  variables = torch_utils.convert_with_cli(
    torch_model, tmp_path, "resnet18", "--num-classes", "10", "--seed", "3"
  )
  torch.manual_seed(3)
  head = torch.nn.Linear(512, 10)
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], head.weight.detach().numpy().T)
  np.testing.assert_array_equal(variables["params"]["fc"]["bias"], head.bias.detach().numpy())
  metadata = pretrained.load_metadata(tmp_path / "resnet18-flax")
  assert metadata["fresh_head"] and metadata["num_classes"] == 10
  assert metadata["num_batches_tracked"]["layer4.1.bn2.num_batches_tracked"] == 1019


def test_body_only_state_dict_gets_a_fresh_head(tmp_path):
  """No fc.* keys (a feature extractor): the body as given, the head torch's nn.Linear."""
  state_dict = torch_utils.randomized_torchvision("resnet18").state_dict()
  body = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
  variables = torch_to_flax.convert_state_dict(body, "resnet18", 7, seed=2)
  reference = torch_to_flax.convert_state_dict(state_dict, "resnet18", 7, seed=2)
  jax.tree.map(np.testing.assert_array_equal, variables, reference)
  assert variables["params"]["fc"]["kernel"].shape == (512, 7)
  with pytest.raises(errors.UserError, match="body-only state dict.*--num-classes"):
    torch_to_flax.convert_state_dict(body, "resnet18")
  r34 = torch_utils.randomized_torchvision("resnet34").state_dict()
  with pytest.raises(ValueError, match="pass --arch resnet34"):
    torch_to_flax.convert_state_dict(
      {k: v for k, v in r34.items() if "fc." not in k}, "resnet18", 7
    )


# --- Bad input: one clear error each. ---


def test_state_dict_of_another_architecture_lists_the_keys():
  state_dict = torch_utils.randomized_torchvision("resnet34").state_dict()
  with pytest.raises(ValueError, match="pass --arch resnet34") as error:
    torch_to_flax.convert_state_dict(state_dict, "resnet18")
  # resnet34 has 8 more BasicBlocks than resnet18, each with 10 keys besides the counters.
  assert "unexpected keys (80)" in str(error.value) and "layer1.2.conv1.weight" in str(error.value)


@pytest.mark.slow  # Builds several architectures: heavy for the fast tier.
def test_state_dict_with_the_same_keys_is_told_apart_by_shapes():
  """resnext50_32x4d has resnet50's keys: only the shapes name it."""
  with torch.device("meta"):
    shapes = torchvision.models.resnext50_32x4d().state_dict()
  state_dict = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}
  with pytest.raises(ValueError, match="pass --arch resnext50_32x4d") as error:
    torch_to_flax.convert_state_dict(state_dict, "resnet50")
  message = str(error.value)
  assert "missing keys" not in message and "unexpected keys" not in message
  assert "layer1.0.conv2.weight: (128, 4, 3, 3), expected (64, 64, 3, 3)" in message


def test_missing_and_misshapen_keys_in_one_error():
  state_dict = torch_utils.randomized_torchvision("resnet18").state_dict()
  del state_dict["layer2.0.bn1.running_var"]
  state_dict["conv1.weight"] = torch.zeros(32, 3, 7, 7)
  with pytest.raises(ValueError) as error:
    torch_to_flax.convert_state_dict(state_dict, "resnet18")
  message = str(error.value)
  assert "missing keys (1): layer2.0.bn1.running_var" in message
  assert "conv1.weight: (32, 3, 7, 7), expected (64, 3, 7, 7)" in message


def test_num_batches_tracked_is_optional():
  state_dict = torch_utils.randomized_torchvision("resnet18").state_dict()
  state_dict = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  variables = torch_to_flax.convert_state_dict(state_dict, "resnet18")
  assert variables["params"]["fc"]["kernel"].shape == (512, 1000)


def test_file_that_is_not_a_checkpoint(tmp_path):
  path = tmp_path / "notes.pt"
  path.write_bytes(np.random.default_rng(0).bytes(1000))
  with pytest.raises(ValueError, match="not a PyTorch checkpoint torch.load can read"):
    torch_to_flax.main(["--torch-checkpoint", str(path), "--output", str(tmp_path / "out")])
  torch.save([torch.ones(2)], path)
  with pytest.raises(ValueError, match="holds a list, not a state dict"):
    torch_to_flax.main(["--torch-checkpoint", str(path), "--output", str(tmp_path / "out")])
  assert not (tmp_path / "out").exists()


def test_output_is_never_overwritten_silently(tmp_path):
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("mine")
  torch.save(torch_utils.randomized_torchvision("resnet18").state_dict(), tmp_path / "m.pt")
  argv = ["--torch-checkpoint", str(tmp_path / "m.pt"), "--output", str(tmp_path / "out")]
  with pytest.raises(
    errors.UserError, match="already exists; choose a new directory or pass --overwrite"
  ):
    torch_to_flax.main(argv)
  assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
  ("arch", "weights", "file"),
  [
    ("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth"),
    ("resnext50_32x4d", "DEFAULT", "resnext50_32x4d-1a0047aa.pth"),  # DEFAULT is IMAGENET1K_V2.
  ],
)
def test_weights_offline_fail_fast_with_the_fix(arch, weights, file, tmp_path, monkeypatch):
  """No network (simulated: tests never touch it): a clear error within seconds."""
  monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

  monkeypatch.setattr(network, "can_reach", lambda host, port: False)
  start = time.monotonic()
  with pytest.raises(ConnectionError, match="--torch-checkpoint FILE") as error:
    torch_to_flax.main(["--arch", arch, "--weights", weights, "--output", str(tmp_path / "out")])
  assert time.monotonic() - start < 5
  assert file in str(error.value)


def test_unknown_weights_name_lists_the_archs_names(tmp_path):
  with pytest.raises(
    ValueError, match=r"choose one of \['IMAGENET1K_V1', 'IMAGENET1K_V2', 'DEFAULT'\]"
  ):
    torch_to_flax.main(
      ["--arch", "wide_resnet50_2", "--weights", "V3", "--output", str(tmp_path / "out")]
    )


def test_load_variables_of_a_directory_that_is_no_conversion(tmp_path):
  with pytest.raises(FileNotFoundError, match="holds no converted weights"):
    pretrained.load_variables(tmp_path)
