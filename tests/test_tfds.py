"""`dataset=tfds:NAME`: any TFDS image-classification builder, on `tfds.testing.mock_data`.

- cifar100, with either of its class labels (`label`: 100 classes, `coarse_label`: 20).
- tf_flowers, whose images vary in size: every image through the transforms to one size, with
  torchvision's pixels (Resize + CenterCrop of the encoded image, decoded by PIL).
- Offline, an unprepared builder fails within seconds naming its own download host; a builder
  that needs a manual download says where its files go; an unknown name, label or split is named.
"""

import io
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from torchvision import transforms as T

from configs import default
from jaxresnet import errors, network
from jaxresnet.data import dataset


def _config(tmp_path, name: str, **overrides):
  config = default.get_config()
  config.update(dataset=f"tfds:{name}", data_dir=str(tmp_path / "tfds"), batch_size=4,
                eval_batch_size=4, **overrides)  # fmt: skip
  return config


@pytest.fixture
def online(monkeypatch):
  """TFDS's mock downloads nothing; the connectivity probe is told the network is up."""
  monkeypatch.setattr(network, "can_reach", lambda host, port: True)


@pytest.mark.parametrize("label_key, num_classes", [("label", 100), ("coarse_label", 20)])
def test_cifar100_with_either_label(tmp_path, online, label_key, num_classes):
  config = _config(tmp_path, "cifar100", label_key=label_key, image_size=32)
  with tfds.testing.mock_data(num_examples=12):
    data = dataset.create_dataset(config, ["train", "test"])
    names = tfds.builder("cifar100").info.features[label_key].names
    batch = next(data.train_batches())
    evaluated = list(data.eval_batches("test"))
  assert data.info.class_names == tuple(names) and data.info.num_classes == num_classes
  assert data.info.num_examples == {"train": 12, "test": 12}
  assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert all(0 <= label < num_classes for b in evaluated for label in b["label"])
  assert sum(b["mask"].sum() for b in evaluated) == 12


def test_images_of_any_size_get_torchvisions_transforms(tmp_path, online):
  """tf_flowers' mocked images are of random sizes: evaluation gives torchvision's
  Resize(27) + CenterCrop(24) (imagenet's, 24 / 0.875) of each, training 24x24 crops."""
  config = _config(tmp_path, "tf_flowers", transforms="imagenet", image_size=24,
                   train_split="train[:50%]", eval_split="train[50%:]")  # fmt: skip
  with tfds.testing.mock_data(num_examples=8):
    data = dataset.create_dataset(config, [config.train_split, config.eval_split])
    crops = next(data.train_batches())["image"]
    batches = list(data.eval_batches(config.eval_split))
    builder = tfds.builder("tf_flowers")
    records = builder.as_data_source("train[50%:]", decoders={"image": tfds.decode.SkipDecoding()})
    originals = [Image.open(io.BytesIO(records[i]["image"])).convert("RGB") for i in range(8)]
  assert len({image.size for image in originals}) > 1  # Sizes vary.
  assert crops.shape == (4, 24, 24, 3)
  images = np.concatenate([b["image"] for b in batches])[
    np.concatenate([b["mask"] for b in batches])
  ]
  reference = T.Compose([T.Resize(27), T.CenterCrop(24)])
  np.testing.assert_array_equal(images, [np.asarray(reference(image)) for image in originals])


def test_offline_fails_fast_naming_the_builders_own_host(tmp_path, monkeypatch):
  asked = []
  monkeypatch.setattr(network, "can_reach", lambda host, port: asked.append((host, port)))
  start = time.monotonic()
  with pytest.raises(errors.NoNetwork) as raised:
    dataset.create_dataset(_config(tmp_path, "tf_flowers"), ["train"])
  assert time.monotonic() - start < 10
  assert asked == [("download.tensorflow.org", 80)]  # tf_flowers' URL info: http.
  message = str(raised.value)
  for needed in ("tf_flowers is not prepared", "download.tensorflow.org unreachable",
                 "file_format='array_record'", "imagefolder:"):  # fmt: skip
    assert needed in message, needed
  assert not (tmp_path / "tfds" / "tf_flowers").exists()


def test_manual_downloads_unknown_names_labels_and_splits_are_named(tmp_path, online):
  with pytest.raises(errors.UserError, match=r"imagenet2012 needs files you download yourself, "
                     rf"into {tmp_path / 'tfds' / 'downloads' / 'manual'}"):  # fmt: skip
    dataset.create_dataset(_config(tmp_path, "imagenet2012"), ["train"])
  with pytest.raises(errors.UserError, match="TFDS has no data set 'no_such_data'"):
    dataset.create_dataset(_config(tmp_path, "no_such_data"), ["train"])
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(errors.UserError, match=r"label_key = 'id' .* \['coarse_label', 'label'\]"):
      dataset.create_dataset(_config(tmp_path, "cifar100", label_key="id"), ["train"])
