"""Input pipeline: CIFAR-10 through (mocked) TFDS, and image folders of real CIFAR-10 JPEGs."""

import itertools
import socket
import time

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import default
from jaxresnet import input_pipeline as ip
from jaxresnet import network, parallel

CIFAR10_CLASSES = (
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
)


def _config(**overrides) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.update(overrides)
  return config


def _folder_config(root, **overrides) -> ml_collections.ConfigDict:
  return _config(dataset=f"imagefolder:{root}", **overrides)


@pytest.fixture
def mock_cifar10(monkeypatch, tmp_path):
  """Factory: (num_examples, **overrides) -> config of a mocked TFDS CIFAR-10, splits loaded.

  TFDS's mock skips downloading, so the connectivity probe is told the network is up. Each test
  gets its own data_dir, which keys the pipeline's cache of loaded splits.
  """
  monkeypatch.setattr(network, "can_reach", lambda host, port: True)

  def make(num_examples: int, **overrides) -> ml_collections.ConfigDict:
    config = _config(data_dir=str(tmp_path / f"tfds_{num_examples}"), **overrides)
    with tfds.testing.mock_data(num_examples=num_examples):
      ip.get_info(config)  # Loads and caches the splits.
    return config

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
  config = mock_cifar10(10, batch_size=4, eval_batch_size=4)
  info = ip.get_info(config)
  assert info.num_classes == 10 and info.image_shape == (32, 32, 3)
  assert (info.num_train, info.num_eval, info.num_val) == (10, 10, 0)

  batch = next(ip.train_batches(config, info))
  assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32

  batches = list(ip.eval_batches(config, config.eval_split))
  assert [b["mask"].sum() for b in batches] == [4, 4, 2]
  images = np.concatenate([b["image"] for b in batches])[
    np.concatenate([b["mask"] for b in batches])
  ]
  np.testing.assert_array_equal(images, ip._load_tfds_split(config.data_dir, "test").images)


def test_cifar10_offline_fails_fast_saying_what_to_do(monkeypatch, tmp_path):
  monkeypatch.setattr(network, "can_reach", lambda host, port: False)
  config = _config(data_dir=str(tmp_path))
  start = time.perf_counter()
  with pytest.raises(FileNotFoundError) as error:
    ip.get_info(config)
  assert time.perf_counter() - start < 10
  message = str(error.value)
  for needed in ("CIFAR-10", str(tmp_path), "no network", "download_and_prepare", "imagefolder:"):
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
  config = mock_cifar10(1003, eval_batch_size=64)
  batches = _process_batches(
    monkeypatch, processes, lambda: ip.eval_batches(config, "test"), count=1000
  )
  assert len(batches) == 16  # ceil(1003 / 64)
  assert all(b["image"].shape[0] == 64 for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 1003 and not mask[1003:].any()
  source = ip._load_tfds_split(config.data_dir, "test")
  np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches])[mask], source.images)
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[mask], source.labels)


def test_training_order_is_seeded_restartable_and_process_count_free(monkeypatch, mock_cifar10):
  config = mock_cifar10(50, batch_size=8)  # 6 steps per epoch, 2 examples dropped.
  info = ip.get_info(config)
  lookup = _lookup(ip._load_tfds_split(config.data_dir, "train").images)

  def order(config, start_step=0, processes=1, steps=18):
    batches = _process_batches(
      monkeypatch, processes, lambda: ip.train_batches(config, info, start_step), steps
    )
    return np.array([[lookup[image.tobytes()] for image in b["image"]] for b in batches])

  steps = order(config)
  for epoch in steps.reshape(3, 48):
    assert len(set(epoch)) == 48  # Each epoch draws without replacement...
  assert not np.array_equal(steps[:6], steps[6:12])  # ...in a new order.
  np.testing.assert_array_equal(order(config), steps)
  reseeded = config.copy_and_resolve_references()
  reseeded.seed = 1
  assert not np.array_equal(order(reseeded), steps)
  for start in (4, 6, 13):
    np.testing.assert_array_equal(order(config, start, steps=18 - start), steps[start:])
  np.testing.assert_array_equal(order(config, processes=2), steps)


def test_batch_sizes_must_divide_among_processes(monkeypatch, cifar_jpeg_subset):
  config = _folder_config(cifar_jpeg_subset, batch_size=8, eval_batch_size=10)
  info = ip.get_info(config)
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  with pytest.raises(ValueError, match=r"config\.batch_size = 8 .* 3 processes"):
    ip.train_batches(config, info)
  with pytest.raises(ValueError, match=r"config\.eval_batch_size = 10 .* 3 processes"):
    ip.eval_batches(config, "test")


def test_batch_larger_than_train_split(cifar_jpeg_subset):
  config = _folder_config(cifar_jpeg_subset, batch_size=512)
  with pytest.raises(ValueError, match=r"config\.batch_size = 512 exceeds the 300 examples"):
    ip.train_batches(config, ip.get_info(config))


def test_image_folder_gives_pil_pixels_in_tfds_image_folder_order(cifar_jpeg_subset):
  config = _folder_config(cifar_jpeg_subset, eval_batch_size=64)
  info = ip.get_info(config)
  assert info.class_names == CIFAR10_CLASSES
  assert (info.num_train, info.num_eval, info.num_val) == (300, 100, 0)
  assert info.image_shape == (32, 32, 3)

  batches = list(ip.eval_batches(config, "test"))
  assert [b["mask"].sum() for b in batches] == [64, 36]
  mask = np.concatenate([b["mask"] for b in batches])
  images = np.concatenate([b["image"] for b in batches])[mask]
  labels = np.concatenate([b["label"] for b in batches])[mask]

  paths = ip._load_folder_split(str(cifar_jpeg_subset), "test", 32).paths
  builder = tfds.folder_dataset.ImageFolder(str(cifar_jpeg_subset))
  dataset = builder.as_dataset("test", decoders={"image": tfds.decode.SkipDecoding()})
  assert [ex["image/filename"].decode() for ex in dataset.as_numpy_iterator()] == list(paths)
  # Decoding matches PIL (hence torchvision) exactly, not within a few levels.
  np.testing.assert_array_equal(images, [np.asarray(Image.open(p).convert("RGB")) for p in paths])
  assert [CIFAR10_CLASSES[label] for label in labels] == [p.split("/")[-2] for p in paths]


def test_image_folder_training_batches_and_restart(cifar_jpeg_subset):
  config = _folder_config(cifar_jpeg_subset, batch_size=32)  # 9 steps per epoch.
  info = ip.get_info(config)
  batches = list(itertools.islice(ip.train_batches(config, info), 11))
  assert batches[0]["image"].shape == (32, 32, 32, 3) and batches[0]["image"].dtype == np.uint8
  restarted = next(ip.train_batches(config, info, start_step=10))
  np.testing.assert_array_equal(restarted["image"], batches[10]["image"])
  np.testing.assert_array_equal(restarted["label"], batches[10]["label"])


def test_validation_carved_from_train(cifar_jpeg_subset):
  config = _folder_config(cifar_jpeg_subset, train_split="train[:90%]", val_split="train[90%:]")
  info = ip.get_info(config)
  assert (info.num_train, info.num_val) == (270, 30)
  root = str(cifar_jpeg_subset)
  train = set(ip._load_folder_split(root, config.train_split, 32).paths)
  val = ip._load_folder_split(root, config.val_split, 32)
  assert not train & set(val.paths) and len(train | set(val.paths)) == 300
  assert len(set(val.labels)) > 3  # The folder order is shuffled, so a slice mixes classes.


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


@pytest.fixture
def jpeg(cifar_jpeg_subset) -> bytes:
  return (cifar_jpeg_subset / "test/cat/0000.jpg").read_bytes()


def test_grayscale_rgba_and_other_sizes_become_rgb_at_source_size(tmp_path, jpeg):
  rng = np.random.default_rng(0)
  gray = Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L")
  rgba = Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA")
  large = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB")
  files = {"a/gray.png": gray, "a/rgba.png": rgba, "a/large.jpg": large, "b/x.jpg": jpeg}
  root = _make_folder(
    tmp_path, {f"{split}/{name}": f for split in ("train", "test") for name, f in files.items()}
  )
  config = _folder_config(root, eval_batch_size=4)
  images = next(ip.eval_batches(config, "test"))["image"]
  for path, image in zip(ip._load_folder_split(str(root), "test", 32).paths, images, strict=True):
    expected = Image.open(path).convert("RGB")
    if expected.size != (32, 32):
      expected = expected.resize((32, 32), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(image, np.asarray(expected), err_msg=path)


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
    list(ip.eval_batches(_folder_config(root, eval_batch_size=2), "test"))


def test_folder_errors(tmp_path, jpeg):
  good = {f"{s}/{c}/0.jpg": jpeg for s in ("train", "test") for c in "ab"}
  root = _make_folder(tmp_path / "empty_class", good)
  (root / "test/b/0.jpg").unlink()
  (root / "test/b/notes.txt").write_text("not an image")
  with pytest.raises(ValueError, match=f"class folder {root / 'test/b'} holds no"):
    ip.get_info(_folder_config(root))

  root = _make_folder(tmp_path / "classes_differ", {**good, "train/c/0.jpg": jpeg})
  with pytest.raises(ValueError, match=r"test lacks the class folders \['c'\]"):
    ip.get_info(_folder_config(root))

  root = _make_folder(
    tmp_path / "no_test", {k: v for k, v in good.items() if k.startswith("train")}
  )
  with pytest.raises(ValueError, match=r"Cannot read split 'test' .* \['train'\]"):
    ip.get_info(_folder_config(root))

  with pytest.raises(ValueError, match=r"Split 'train\[:0\]' of imagefolder:.* is empty"):
    ip.get_info(_folder_config(root, train_split="train[:0]", eval_split="train"))

  with pytest.raises(FileNotFoundError, match="does not exist"):
    ip.get_info(_folder_config(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="config.dataset = 'mnist' is unknown"):
    ip.get_info(_config(dataset="mnist"))


def test_to_global_shards_over_the_data_axis():
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  size = jax.device_count() * 2
  batch = {"image": np.zeros((size, 4, 4, 3), np.uint8), "label": np.arange(size, dtype=np.int32)}
  arrays = parallel.to_global(batch, mesh)
  assert arrays["image"].shape == batch["image"].shape
  assert arrays["label"].sharding.spec == jax.sharding.PartitionSpec("data")
  np.testing.assert_array_equal(arrays["label"], batch["label"])
