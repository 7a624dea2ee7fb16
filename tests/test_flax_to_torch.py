"""Export to PyTorch: torch -> Flax -> torch is the identity, and an export computes Flax's logits.

The round trip goes through both CLIs and disk, so it covers the converter's metadata too:
every tensor comes back with its dtype and bits, `num_batches_tracked` included. The logits of
a fine-tuned, exported model are compared at the forward tests' float32 tolerance.
"""

import pathlib

import jax
import numpy as np
import pytest
import torch
import torchvision

from configs import default
from convert import flax_to_torch, layout
from jaxresnet import errors, models, optimizers, pretrained, steps
from tests import torch_utils

pytestmark = pytest.mark.usefixtures("exact_matmuls")


def export_with_cli(conversion: pathlib.Path, *extra: str) -> dict[str, torch.Tensor]:
  output = conversion.parent / "exported.pt"
  flax_to_torch.main(["--input", str(conversion), "--output", str(output), *extra])
  return torch.load(output, weights_only=True)


def random_variables(arch: str, num_classes: int) -> dict:
  rng = np.random.default_rng(0)
  shapes = layout.variable_shapes(arch, num_classes)
  return layout.unflatten({p: rng.standard_normal(s, np.float32) for p, s in shapes.items()})


@pytest.mark.parametrize(
  ("arch", "num_classes"),
  [
    ("resnet18", 10),
    *(
      pytest.param(arch, num_classes, marks=pytest.mark.slow)
      for arch, num_classes in [
        ("resnet34", 7),
        ("resnet50", 1000),
        ("resnet101", 10),
        ("resnext50_32x4d", 1000),
        ("wide_resnet50_2", 10),
      ]  # Every block type; the deeper 101/152 variants share them, and test_models.py checks
      # every one of their variables' keys and shapes against torchvision's.
    ),
  ],
)
def test_round_trip_is_bit_for_bit(arch, num_classes, tmp_path):
  model = torch_utils.randomized_torchvision(arch, num_classes)
  source = model.state_dict()
  torch_utils.convert_with_cli(model, tmp_path, arch)
  exported = export_with_cli(tmp_path / f"{arch}-flax")
  assert list(exported) == list(source)  # Same keys, in torchvision's order.
  for key, tensor in source.items():
    assert exported[key].dtype == tensor.dtype and torch.equal(exported[key], tensor), key
  assert all(int(v) > 0 for k, v in source.items() if k.endswith(layout.COUNTER))


def test_steps_advance_every_counter(tmp_path):
  model = torch_utils.randomized_torchvision("resnet18")
  torch_utils.convert_with_cli(model, tmp_path, "resnet18")
  exported = export_with_cli(tmp_path / "resnet18-flax", "--steps", "7")
  counters = {k: v for k, v in model.state_dict().items() if k.endswith(layout.COUNTER)}
  assert len(counters) == 20  # ResNet-18's BatchNorms.
  for key, count in counters.items():
    assert int(exported[key]) == int(count) + 7, key


@pytest.mark.parametrize(
  ("arch", "last_bn"), [("resnet18", "layer4.1.bn2"), ("resnet50", "layer4.2.bn3")]
)
def test_missing_counters_count_from_zero(arch, last_bn):
  variables = random_variables(arch, 3)
  state_dict = flax_to_torch.export_state_dict(variables, {"bn1.num_batches_tracked": 5}, steps=2)
  state_dict = flax_to_torch.torchvision_state_dict(state_dict, arch, 3)  # Loads strictly.
  assert int(state_dict["bn1.num_batches_tracked"]) == 5 + 2
  assert int(state_dict[f"{last_bn}.num_batches_tracked"]) == 0 + 2


@pytest.mark.slow
def test_exported_fine_tuned_model_gives_flax_logits(tmp_path):
  torch_model = torch_utils.randomized_torchvision("resnet18")
  variables = torch_utils.convert_with_cli(torch_model, tmp_path, "resnet18", "--num-classes", "10")
  metadata = pretrained.load_metadata(tmp_path / "resnet18-flax")
  model = models.create_model("resnet18", 10)
  config = default.get_config()
  state = steps.create_train_state(model, variables, optimizers.create_optimizer(config, 1))
  train_images = torch_utils.parity_inputs(num_real=4, num_noise=4, size=64)
  state, _ = jax.jit(steps.update)(state, torch_utils.to_nhwc(train_images), np.arange(8) % 10)
  tuned = {"params": state.params, "batch_stats": state.batch_stats}
  assert not np.array_equal(
    tuned["batch_stats"]["bn1"]["var"], variables["batch_stats"]["bn1"]["var"]
  )

  state_dict = flax_to_torch.export_state_dict(tuned, metadata["num_batches_tracked"], steps=1)
  exported = torchvision.models.resnet18(num_classes=10)
  exported.load_state_dict(state_dict, strict=True)
  images = torch_utils.parity_inputs(num_real=4, num_noise=4)
  with torch.no_grad():
    expected = exported.eval()(images).numpy()
  actual = np.asarray(jax.jit(model.apply)(tuned, torch_utils.to_nhwc(images)))
  diff = np.abs(actual - expected).max()
  print(
    f"\nexported logits vs Flax: largest difference {diff:.2e} (logits up to "
    f"{np.abs(expected).max():.1f})"
  )
  assert diff <= 1e-4 * max(1.0, np.abs(expected).max())


# --- Bad input: one clear error each, and nothing written. ---


def test_input_that_is_no_conversion(tmp_path):
  with pytest.raises(FileNotFoundError, match="holds no converted weights"):
    flax_to_torch.main(["--input", str(tmp_path), "--output", str(tmp_path / "m.pt")])
  (tmp_path / pretrained.METADATA_FILE).write_text('{"arch": "resnet18", "num_classes": 10}')
  with pytest.raises(ValueError, match="directory is damaged"):
    flax_to_torch.main(["--input", str(tmp_path), "--output", str(tmp_path / "m.pt")])
  assert not (tmp_path / "m.pt").exists()


def test_metadata_without_a_model(tmp_path):
  pretrained.save_variables(tmp_path / "in", random_variables("resnet18", 10), {"arch": "vgg"})
  with pytest.raises(ValueError, match="names no model"):
    flax_to_torch.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "m.pt")])
  assert not (tmp_path / "m.pt").exists()


def test_export_that_does_not_load_is_never_written(tmp_path):
  metadata = {"arch": "resnet34", "num_classes": 10}
  pretrained.save_variables(tmp_path / "in", random_variables("resnet18", 10), metadata)
  with pytest.raises(ValueError, match="does not load into torchvision's resnet34") as error:
    flax_to_torch.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "m.pt")])
  assert "layer1.2.conv1.weight" in str(error.value)  # torch's list of missing keys.
  assert not (tmp_path / "m.pt").exists()


def test_counters_of_unknown_batchnorms():
  with pytest.raises(ValueError, match="layer1.2.bn1.num_batches_tracked"):
    flax_to_torch.export_state_dict(
      random_variables("resnet18", 10), {"layer1.2.bn1.num_batches_tracked": 3}
    )


def test_output_is_never_overwritten_silently(tmp_path):
  torch_utils.convert_with_cli(torch_utils.randomized_torchvision("resnet18"), tmp_path, "resnet18")
  argv = ["--input", str(tmp_path / "resnet18-flax"), "--output", str(tmp_path / "m.pt")]
  (tmp_path / "m.pt").write_text("mine")
  with pytest.raises(
    errors.UserError, match="already exists; choose a new file or pass --overwrite"
  ):
    flax_to_torch.main(argv)
  assert (tmp_path / "m.pt").read_text() == "mine"
  flax_to_torch.main([*argv, "--overwrite"])
  assert "conv1.weight" in torch.load(tmp_path / "m.pt", weights_only=True)


def test_negative_steps_are_refused(tmp_path):
  with pytest.raises(errors.UserError, match="--steps must be >= 0"):
    flax_to_torch.main(["--input", str(tmp_path), "--output", "m.pt", "--steps", "-1"])
