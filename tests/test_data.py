"""The data set object: CIFAR-10 through (mocked) TFDS, and image folders of real CIFAR-10 JPEGs.

Every test goes through the public API: `create_dataset`, `Dataset.info`, `train_batches`,
`eval_batches`.
"""

import itertools
import logging
import socket
import time

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2 import functional as F

from configs import default
from jaxresnet import network, parallel
from jaxresnet.data import cifar10_jpeg, dataset, decode

CIFAR10_CLASSES = cifar10_jpeg.CLASSES


def _config(**overrides) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.update(overrides)
  return config


def _folder_config(root, **overrides) -> ml_collections.ConfigDict:
  """A folder at image_size 32: the paper's Resize(32) + CenterCrop(32) leaves CIFAR's JPEGs
  as they are, so their pixels can be compared with PIL's own."""
  return _config(**{"dataset": f"imagefolder:{root}", "image_size": 32, **overrides})


def _folder_dataset(root, splits=("train", "test"), **overrides) -> dataset.Dataset:
  return dataset.create_dataset(_folder_config(root, **overrides), splits)


@pytest.fixture
def mock_cifar10(monkeypatch, tmp_path):
  """Factory: (num_examples, **overrides) -> (Dataset of a mocked TFDS CIFAR-10, its images).

  TFDS's mock skips downloading, so the connectivity probe is told the network is up. The data
  set loads its splits while the mock is active; the images of each split, as TFDS itself reads
  them under the same mock, come along to compare with.
  """
  monkeypatch.setattr(network, "can_reach", lambda host, port: True)

  def make(num_examples: int, **overrides) -> tuple[dataset.Dataset, dict]:
    config = _config(data_dir=str(tmp_path / f"tfds_{num_examples}"), **overrides)
    with tfds.testing.mock_data(num_examples=num_examples):
      data = dataset.create_dataset(config, ["train", "test"])
      builder = tfds.builder("cifar10", data_dir=config.data_dir)
      source = {
        split: list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
        for split in ("train", "test")
      }
    return data, {
      split: {key: np.stack([ex[key] for ex in examples]) for key in ("image", "label")}
      for split, examples in source.items()
    }

  return make


def _lookup(images: np.ndarray) -> dict[bytes, int]:
  """Maps each (random, hence unique) image to its index."""
  table = {image.tobytes(): i for i, image in enumerate(images)}
  assert len(table) == len(images)
  return table


def _process_batches(monkeypatch, processes: int, make_batches, count: int) -> list[dict]:
  """Runs make_batches as each of `processes` processes; returns the global batches."""
  monkeypatch.setattr(jax, "process_count", lambda: processes)
  per_process = []
  for index in range(processes):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    per_process.append(list(itertools.islice(make_batches(), count)))
  return [
    {key: np.concatenate([batch[key] for batch in parts]) for key in parts[0]}
    for parts in zip(*per_process, strict=True)
  ]


def test_cifar10_through_tfds(mock_cifar10):
  data, source = mock_cifar10(10, batch_size=4, eval_batch_size=4)
  info = data.info
  assert info.num_classes == 10  # The mock names its classes "0" .. "9".
  assert info.num_examples == {"train": 10, "test": 10}

  batch = next(data.train_batches())
  assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32

  batches = list(data.eval_batches("test"))
  assert [b["mask"].sum() for b in batches] == [4, 4, 2]
  mask = np.concatenate([b["mask"] for b in batches])
  images = np.concatenate([b["image"] for b in batches])[mask]
  np.testing.assert_array_equal(images, source["test"]["image"])


def test_splits_are_loaded_once_and_others_refused(mock_cifar10):
  data, _ = mock_cifar10(10)
  with pytest.raises(KeyError, match=r"Split 'train\[:5\]' was not loaded"):
    data.eval_batches("train[:5]")


def test_cifar10_offline_fails_fast_saying_what_to_do(monkeypatch, tmp_path):
  monkeypatch.setattr(network, "can_reach", lambda host, port: False)
  config = _config(data_dir=str(tmp_path))
  start = time.perf_counter()
  with pytest.raises(FileNotFoundError) as error:
    dataset.create_dataset(config, ["train"])
  assert time.perf_counter() - start < 10
  message = str(error.value)
  host = "www.cs.toronto.edu unreachable (no network?)"  # CIFAR-10's URL info.
  for needed in ("cifar10 is not prepared", str(tmp_path), host, "download_and_prepare",
                 "imagefolder:"):  # fmt: skip
    assert needed in message


def test_connectivity_probe():
  with socket.create_server(("127.0.0.1", 0)) as server:
    port = server.getsockname()[1]
    assert network.can_reach("127.0.0.1", port)
  start = time.perf_counter()
  assert not network.can_reach("127.0.0.1", port)  # Closed now: refused.
  assert time.perf_counter() - start < 5


@pytest.mark.parametrize("processes", [1, 2])
def test_eval_visits_every_example_exactly_once(monkeypatch, mock_cifar10, processes):
  data, source = mock_cifar10(203, eval_batch_size=64)  # 64 per batch, 32 per process.
  batches = _process_batches(monkeypatch, processes, lambda: data.eval_batches("test"), 1000)
  assert len(batches) == 4  # ceil(203 / 64)
  assert all(b["image"].shape[0] == 64 for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 203 and not mask[203:].any()
  for key in ("image", "label"):
    ours = np.concatenate([b[key] for b in batches])[mask]
    np.testing.assert_array_equal(ours, source["test"][key])


def test_training_order_is_seeded_restartable_and_process_count_free(monkeypatch, mock_cifar10):
  data, source = mock_cifar10(50, batch_size=8)  # 6 steps per epoch, 2 examples dropped.
  reseeded, _ = mock_cifar10(50, batch_size=8, seed=1)
  lookup = _lookup(source["train"]["image"])

  def order(data, start_step=0, processes=1, steps=18):
    batches = _process_batches(
      monkeypatch, processes, lambda: data.train_batches(start_step), steps
    )
    return np.array([[lookup[image.tobytes()] for image in b["image"]] for b in batches])

  steps = order(data)
  for epoch in steps.reshape(3, 48):
    assert len(set(epoch)) == 48  # Each epoch draws without replacement...
  assert not np.array_equal(steps[:6], steps[6:12])  # ...in a new order.
  np.testing.assert_array_equal(order(data), steps)
  assert not np.array_equal(order(reseeded), steps)
  for start in (4, 6, 13):
    np.testing.assert_array_equal(order(data, start, steps=18 - start), steps[start:])
  np.testing.assert_array_equal(order(data, processes=2), steps)


def test_batch_sizes_must_divide_among_processes(monkeypatch, cifar_jpeg_subset):
  data = _folder_dataset(cifar_jpeg_subset, batch_size=8, eval_batch_size=10)
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  with pytest.raises(ValueError, match=r"config\.batch_size = 8 .* 3 processes"):
    data.train_batches()
  with pytest.raises(ValueError, match=r"config\.eval_batch_size = 10 .* 3 processes"):
    data.eval_batches("test")


def test_batch_larger_than_train_split(cifar_jpeg_subset):
  data = _folder_dataset(cifar_jpeg_subset, batch_size=512)
  with pytest.raises(ValueError, match=r"config\.batch_size = 512 exceeds the 300 examples"):
    data.train_batches()


def _eval_images(data: dataset.Dataset, spec: str) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) of one pass over `spec`, padding dropped."""
  batches = list(data.eval_batches(spec))
  mask = np.concatenate([b["mask"] for b in batches])
  return tuple(np.concatenate([b[key] for b in batches])[mask] for key in ("image", "label"))


def test_image_folder_gives_pil_pixels_in_tfds_image_folder_order(cifar_jpeg_subset):
  data = _folder_dataset(cifar_jpeg_subset, eval_batch_size=64)
  info = data.info
  assert info.class_names == CIFAR10_CLASSES
  assert info.num_examples == {"train": 300, "test": 100}
  assert [b["mask"].sum() for b in data.eval_batches("test")] == [64, 36]
  images, labels = _eval_images(data, "test")

  builder = tfds.folder_dataset.ImageFolder(str(cifar_jpeg_subset))
  examples = builder.as_dataset("test", decoders={"image": tfds.decode.SkipDecoding()})
  paths = [ex["image/filename"].decode() for ex in examples.as_numpy_iterator()]
  # Decoding matches PIL (hence torchvision) exactly, not within a few levels.
  np.testing.assert_array_equal(images, [np.asarray(Image.open(p).convert("RGB")) for p in paths])
  assert [CIFAR10_CLASSES[label] for label in labels] == [p.split("/")[-2] for p in paths]


def test_image_folder_training_batches_and_restart(cifar_jpeg_subset):
  data = _folder_dataset(cifar_jpeg_subset, batch_size=32)  # 9 steps per epoch.
  batches = list(itertools.islice(data.train_batches(), 11))
  assert batches[0]["image"].shape == (32, 32, 32, 3) and batches[0]["image"].dtype == np.uint8
  restarted = next(data.train_batches(start_step=10))
  np.testing.assert_array_equal(restarted["image"], batches[10]["image"])
  np.testing.assert_array_equal(restarted["label"], batches[10]["label"])


def test_validation_carved_from_train(cifar_jpeg_subset):
  splits = ("train[:90%]", "train[90%:]", "train")
  data = _folder_dataset(cifar_jpeg_subset, splits)
  assert [data.info.num_examples[s] for s in splits] == [270, 30, 300]
  train, val, everything = (
    {image.tobytes() for image in _eval_images(data, spec)[0]} for spec in splits
  )
  assert not train & val and train | val == everything and len(everything) == 300
  assert len(set(_eval_images(data, "train[90%:]")[1])) > 3  # A shuffled order mixes classes.


def _make_folder(root, files: dict[str, bytes | Image.Image]):
  """Writes {'split/class/name.ext': JPEG bytes or a PIL image} under root; returns root."""
  for name, content in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
      path.write_bytes(content)
    else:
      content.save(path)
  return root


def test_class_folders_form_one_pool_split_by_percentages_per_class(tmp_path):
  """ROOT/<class>/ (no split folders), imbalanced 20 / 5 / 3: 'train[:80%]' and 'train[80%:]' are
  disjoint, cover the pool, and hold each class in its share to within one image."""
  rng = np.random.default_rng(0)
  counts = {"common": 20, "rare": 5, "rarest": 3}
  root = _make_folder(tmp_path / "pool", {
    f"{name}/{i:02d}.png": Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8))
    for name, n in counts.items() for i in range(n)
  })  # fmt: skip
  splits = ["train[:80%]", "train[80%:]", "train"]
  data = _folder_dataset(root, splits, image_size=8, eval_batch_size=4)
  assert data.info.class_names == tuple(counts)
  train, test, everything = (data.info.class_counts[s] for s in splits)
  assert everything == tuple(counts.values())
  assert all(abs(t - 0.8 * n) <= 1 for t, n in zip(train, everything, strict=True)), train
  assert np.add(train, test).tolist() == list(everything)
  seen = [{image.tobytes() for image in _eval_images(data, spec)[0]} for spec in splits]
  assert not seen[0] & seen[1] and seen[0] | seen[1] == seen[2] and len(seen[2]) == 28
  again = _folder_dataset(root, splits[:1], image_size=8, eval_batch_size=4)
  assert {i.tobytes() for i in _eval_images(again, splits[0])[0]} == seen[0]  # Fixed order.
  with pytest.raises(
    ValueError, match=r"'test' .* one pool, 'train': .*eval_split='train\[80%:\]'"
  ):
    _folder_dataset(root)  # The default splits, train and test.


@pytest.fixture
def jpeg(cifar_jpeg_subset) -> bytes:
  return (cifar_jpeg_subset / "test/cat/0000.jpg").read_bytes()


def test_grayscale_rgba_other_sizes_and_types_become_rgb_at_source_size(tmp_path, jpeg):
  """source_image_size=32 squashes every image to 32x32 on the host, as PIL's resize does."""
  rng = np.random.default_rng(0)
  gray = Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L")
  rgba = Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA")
  large = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB")
  files = {"a/gray.png": gray, "a/rgba.png": rgba, "a/large.jpg": large, "b/x.jpg": jpeg}
  files.update({f"b/x.{suffix}": large for suffix in ("bmp", "tif", "TIFF", "webp", "jpeg")})
  root = _make_folder(
    tmp_path, {f"{split}/{name}": f for split in ("train", "test") for name, f in files.items()}
  )
  images, _ = _eval_images(_folder_dataset(root, eval_batch_size=4, source_image_size=32), "test")
  expected = []
  for name in files:
    image = Image.open(root / "test" / name).convert("RGB")
    if image.size != (32, 32):
      image = image.resize((32, 32), Image.Resampling.BILINEAR)
    expected.append(np.asarray(image).tobytes())
  assert sorted(image.tobytes() for image in images) == sorted(expected)


def test_images_shrunk_below_the_model_input_are_warned_about(tmp_path, caplog):
  """96x128 photos, source_image_size 32, image_size 64: the host would throw away detail the
  model could use. At source_image_size 64, or 0 (the default: each image's own size), it does
  not, and says nothing; at image_size 448 the images would be blown up over 4x, which it says."""
  photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8))
  files = {f"{split}/{c}/{i}.png": photo for split in ("train", "test") for c in "ab"
           for i in range(3)}  # fmt: skip
  files["train/a/._0.png"] = b"not an image: a macOS resource fork, skipped"
  root = _make_folder(tmp_path, files)

  def warnings(**overrides) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="absl"):
      data = _folder_dataset(root, **overrides)
    assert data.info.num_examples["train"] == 6  # The hidden file is not an example.
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

  (shrunk,) = warnings(image_size=64, source_image_size=32)
  assert "about 96 pixels on their shorter side" in shrunk
  assert "Set --config.source_image_size=0 (each image's own size) or 64." in shrunk
  assert not warnings(image_size=64, source_image_size=64) and not warnings(image_size=64)
  (blown_up,) = warnings(image_size=448)
  assert "about 96 pixels" in blown_up and "448x448 input blows them up over 4x" in blown_up


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29
def test_sixteen_bit_grayscale_is_scaled_as_torchvision_scales_it(tmp_path):
  """PIL's convert("RGB") clips 16-bit values to 255; torchvision's decode_image and
  to_dtype(uint8, scale=True) give value >> 8, and so does decode, for PNG and TIFF alike."""
  values = np.random.default_rng(0).integers(0, 65536, (32, 32)).astype(np.uint16)
  values[0, :4] = [0, 255, 256, 65535]
  images = {
    "png": Image.fromarray(values),  # I;16
    "tif": Image.frombytes("I;16B", (32, 32), values.astype(">u2").tobytes()),
    "tiff": Image.fromarray(values.astype(np.int32), "I"),
  }
  for suffix, image in images.items():
    image.save(tmp_path / f"gray.{suffix}")
  png = torchvision.io.decode_image(torchvision.io.read_file(str(tmp_path / "gray.png")))
  assert png.dtype == torch.uint16
  expected = F.to_dtype(png, torch.uint8, scale=True).expand(3, -1, -1).permute(1, 2, 0).numpy()
  np.testing.assert_array_equal(expected[..., 0], values >> 8)
  for suffix in images:
    assert Image.open(tmp_path / f"gray.{suffix}").mode == images[suffix].mode
    np.testing.assert_array_equal(
      np.asarray(decode.read_rgb(tmp_path / f"gray.{suffix}")), expected
    )
  assert (np.asarray(Image.open(tmp_path / "gray.png").convert("L")) == 255).mean() > 0.99


@pytest.mark.parametrize("kind", ["garbage", "truncated", "broken_link"])
def test_bad_image_is_named(tmp_path, jpeg, kind):
  root = _make_folder(
    tmp_path, {f"{s}/{c}/{i}.jpg": jpeg for s in ("train", "test") for c in "ab" for i in range(3)}
  )
  bad = root / "test/b/bad.jpg"
  if kind == "garbage":
    bad.write_bytes(b"not an image" * 20)
  elif kind == "truncated":
    bad.write_bytes(jpeg[: len(jpeg) // 2])
  else:
    bad.symlink_to(tmp_path / "missing.jpg")
  with pytest.raises(ValueError, match=f"Cannot read the image {bad}"):
    list(_folder_dataset(root, eval_batch_size=2).eval_batches("test"))


def test_folder_errors(tmp_path, jpeg):
  good = {f"{s}/{c}/0.jpg": jpeg for s in ("train", "test") for c in "ab"}
  root = _make_folder(tmp_path / "empty_class", good)
  (root / "test/b/0.jpg").unlink()
  (root / "test/b/notes.txt").write_text("not an image")
  with pytest.raises(ValueError, match=f"class folder {root / 'test/b'} holds no"):
    _folder_dataset(root)

  # The folder above the image folder (e.g. one holding cifar10-jpeg/): its split folders
  # look like classes, and the error names the folder to use instead.
  parent = tmp_path / "parent"
  _make_folder(parent / "data", good)
  with pytest.raises(
    ValueError, match=rf"not images: .* use --config.dataset=imagefolder:{parent / 'data'};"
  ):
    _folder_dataset(parent)

  root = _make_folder(tmp_path / "classes_differ", {**good, "train/c/0.jpg": jpeg})
  with pytest.raises(ValueError, match=r"test lacks the class folders \['c'\]"):
    _folder_dataset(root)

  root = _make_folder(
    tmp_path / "no_test", {k: v for k, v in good.items() if k.startswith("train")}
  )
  with pytest.raises(ValueError, match=r"Cannot read split 'test' .* splits \['train'\]"):
    _folder_dataset(root)

  with pytest.raises(ValueError, match=r"Split 'train\[:0\]' of imagefolder:.* is empty"):
    _folder_dataset(root, ["train[:0]", "train"])

  with pytest.raises(FileNotFoundError, match="does not exist"):
    _folder_dataset(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="config.dataset = 'mnist' is unknown"):
    dataset.create_dataset(_config(dataset="mnist"), ["train"])


def test_to_global_shards_over_the_data_axis():
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  size = jax.device_count() * 2
  batch = {"image": np.zeros((size, 4, 4, 3), np.uint8), "label": np.arange(size, dtype=np.int32)}
  arrays = parallel.to_global(batch, mesh)
  assert arrays["image"].shape == batch["image"].shape
  assert arrays["label"].sharding.spec == jax.sharding.PartitionSpec("data")
  np.testing.assert_array_equal(arrays["label"], batch["label"])
