"""The companion CLIs on a finished run, and what all three CLIs need.

- `evaluate` reproduces the run's last test accuracy; `predict` and the torchvision export of the
  same run predict the same classes.
- Converted weights, through the training code path and the jitted eval step, predict what
  torchvision predicts.
- `train`, `evaluate` and `predict` import without TensorFlow installed.
"""

import sys

import jax
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from configs import sgd
from convert import flax_to_torch, torch_to_flax, transforms
from jaxresnet import evaluate, models, parallel, predict, preprocess, train
from jaxresnet.data import dataset as dataset_lib
from jaxresnet.data import decode
from tests import torch_utils
from tests import train_helpers as th


@pytest.mark.slow  # Heavy for the fast tier (300 images through both frameworks).
def test_converted_weights_predict_like_torchvision_before_training(
  cifar_root, tmp_path, exact_matmuls
):
  """300 real test images, 32x32 resized to 48 (224, the paper's size, costs 20x more here)."""
  num_images, image_size = 300, 48
  source = torch_utils.randomized_torchvision("resnet18")  # 1000 classes.
  torch_utils.convert_with_cli(source, tmp_path, "resnet18", "--num-classes", "10")
  converted = tmp_path / "resnet18-flax"  # Where convert_with_cli writes.
  # torch with the fresh 10-class head the converter drew (torch's nn.Linear init, seed 0).
  torch_model = torchvision.models.resnet18(num_classes=10).eval()
  torch_model.load_state_dict(torch_to_flax.with_head(source.state_dict(), "resnet18", 10, 0))

  # The training code path: the paper's config, weights from init_from, the jitted eval step.
  config = sgd.get_config()
  config.update(
    dataset=f"imagefolder:{cifar_root}", image_size=image_size, init_from=str(converted),
    eval_batch_size=num_images,
  )  # fmt: skip
  split = f"test[:{num_images}]"
  data = dataset_lib.create_dataset(config, [split])
  batch = next(data.eval_batches(split))
  assert batch["mask"].all() and len(batch["image"]) == num_images
  model = models.create_model(config.model, 10)
  variables, _ = train.initial_variables(config, model, 10, jax.random.key(0))

  # torch gets its own transforms of the same decoded pixels, which equal what our step sees.
  transform = transforms.paper_transform(image_size)
  images = torch.stack([transform(Image.fromarray(image)) for image in batch["image"]])
  ours = np.asarray(preprocess.preprocess(batch["image"], config))
  np.testing.assert_allclose(torch_utils.to_nhwc(images), ours, rtol=0, atol=1e-6)
  with torch.no_grad():
    torch_logits = torch_model(images)
  torch_top1 = torch_logits.argmax(-1)

  # Labelled with torch's predictions, the eval step's accuracy is the top-1 agreement, and its
  # loss is torch's cross-entropy of its own logits against them.
  eval_step = parallel.jit_eval_step(model, config, parallel.create_mesh())
  labelled = {**batch, "label": torch_top1.numpy().astype(np.int32)}
  computed = jax.device_get(eval_step(variables, labelled).compute())
  torch_loss = float(torch.nn.functional.cross_entropy(torch_logits, torch_top1))
  print(f"top-1 agreement {computed['accuracy']:.4f}; mean cross-entropy {computed['loss']:.6f} "
        f"(torch {torch_loss:.6f})")  # fmt: skip
  assert computed["accuracy"] >= 0.995
  assert computed["loss"] == pytest.approx(torch_loss, rel=1e-4)


@pytest.mark.slow  # Three CLIs' compilations: heavy for the fast tier.
def test_evaluate_predict_and_export_agree_with_training(mock_run, cifar_jpeg_subset, tmp_path):
  """evaluate reproduces the last epoch's test accuracy; the model exported to torchvision
  predicts what `predict` predicts, on real test images."""
  workdir, results, _, config = mock_run
  with th.mocked_cifar10():
    result = evaluate.evaluate_checkpoint(workdir, "latest", None)
  steps = 2 * th.MOCK_STEPS_PER_EPOCH
  assert result["step"] == steps and result["split"] == "test"
  assert result["accuracy"] == pytest.approx(results["test/accuracy"], abs=1e-6)
  assert result["loss"] == pytest.approx(results["test/loss"], rel=1e-6)
  assert int(result["confusion_matrix"].sum()) == th.MOCK_EXAMPLES  # Each image once.

  images = sorted((cifar_jpeg_subset / "test").glob("*/000[0-2].jpg"))
  [(predicted, probabilities)] = predict.Predictor(workdir)(images)
  assert predicted == images
  exported = tmp_path / "model.pt"
  flax_to_torch.main(["--input", str(workdir), "--output", str(exported)])
  torch_model = torchvision.models.resnet18(num_classes=10)
  torch_model.load_state_dict(torch.load(exported, weights_only=True))
  counters = [v for k, v in torch_model.state_dict().items() if k.endswith("num_batches_tracked")]
  assert all(int(c) == steps for c in counters)  # A scratch run: 0 + one per step.
  pixels = np.stack([np.asarray(decode.read_rgb(p)) for p in images])  # 32x32: as they are.
  inputs = np.array(preprocess.preprocess(jax.numpy.asarray(pixels), config))  # Writable.
  with torch.no_grad():
    logits = torch_model.eval()(torch.from_numpy(inputs).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_array_equal(probabilities.argmax(-1), logits.argmax(-1))


def test_clis_import_without_tensorflow():
  """As on the usual JAX images: `import tensorflow` fails, and `find_spec` finds nothing."""
  script = """
import importlib.machinery, importlib.util, sys

class NoTensorFlow(importlib.machinery.PathFinder):
  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name.partition(".")[0] == "tensorflow":
      return None
    return super().find_spec(name, path, target)

sys.meta_path = [NoTensorFlow if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
assert importlib.util.find_spec("tensorflow") is None
import jaxresnet.train, jaxresnet.evaluate, jaxresnet.predict
assert not any(m.partition(".")[0] == "tensorflow" for m in sys.modules), "TensorFlow imported"
print("ok")
"""
  result = th.run([sys.executable, "-c", script])
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
