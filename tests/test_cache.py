"""The decode-once image cache (`jaxresnet/data/cache.py`, config.cache_dir).

- Cached batches are the uncached ones, bit for bit, for the paper preset (training and
  evaluation) and imagenet's evaluation; imagenet's training crops keep their shape and draws.
- A second run reads the cache without decoding a file; a file changed since (its mtime) builds
  a new one.
- Every unreadable file is named at once, and a disk without room refuses, both before any
  batch, leaving no cache behind.
"""

import itertools
import os

import numpy as np
import pytest
from PIL import Image

from configs import default
from jaxresnet import errors
from jaxresnet.data import cache, dataset, decode

SIZES = [(60, 45), (31, 70), (50, 50), (90, 41)]


@pytest.fixture
def folder(tmp_path, cifar_jpeg_subset):
  """Non-square photos (CIFAR JPEGs blown up), two classes, train and test."""
  files = sorted((cifar_jpeg_subset / "test").glob("*/000[0-3].jpg"))[:8]
  root = tmp_path / "photos"
  for i, (file, size) in enumerate(zip(files, itertools.cycle(SIZES))):
    for split in ("train", "test"):
      path = root / split / "ab"[i % 2] / f"{i}.png"
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.open(file).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path)
  return root


def _prepared(root, cache_dir, **overrides) -> dataset.Dataset:
  config = default.get_config()
  config.update(dataset=f"imagefolder:{root}", image_size=24, batch_size=8, eval_batch_size=8,
                cache_dir=str(cache_dir), **overrides)  # fmt: skip
  data = dataset.create_dataset(config, ["train", "test"])
  return data.prepared(27 if config.transforms == "imagenet" else 24)


def _images(batches) -> np.ndarray:
  return np.concatenate([b["image"] for b in batches])


@pytest.mark.parametrize("preset", ["paper", "imagenet"])
def test_cached_batches_are_the_uncached_ones(folder, tmp_path, preset):
  cached, uncached = (_prepared(folder, d, transforms=preset) for d in (tmp_path / "cache", ""))
  np.testing.assert_array_equal(_images(cached.eval_batches("test")),
                                _images(uncached.eval_batches("test")))  # fmt: skip
  train = [_images(itertools.islice(d.train_batches(), 3)) for d in (cached, uncached)]
  if preset == "paper":  # Resize + CenterCrop, flips on the device: the same pixels.
    np.testing.assert_array_equal(*train)
  else:  # Crops of the stored image: same shape, drawn the same way on every run.
    assert train[0].shape == train[1].shape == (24, 24, 24, 3)
    again = _prepared(folder, tmp_path / "cache", transforms=preset)
    np.testing.assert_array_equal(_images(itertools.islice(again.train_batches(), 3)), train[0])


def test_hit_reads_no_file_and_a_changed_file_builds_anew(folder, tmp_path, monkeypatch):
  _prepared(folder, tmp_path / "cache")
  built = sorted(p.name for p in (tmp_path / "cache").iterdir())
  assert len(built) == 2  # The train and test splits.

  def refuse(*args, **kwargs):
    raise AssertionError("decoded although cached")

  monkeypatch.setattr(decode, "read_rgb", refuse)
  data = _prepared(folder, tmp_path / "cache")
  assert len(_images(data.eval_batches("test"))) == 8
  monkeypatch.undo()
  changed = next((folder / "test").rglob("*.png"))
  os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
  _prepared(folder, tmp_path / "cache")
  assert len(list((tmp_path / "cache").iterdir())) == 3  # A new cache for the test split.


def test_unreadable_files_are_all_named_before_any_batch(folder, tmp_path):
  bad = [folder / "test/a/bad.png", folder / "test/b/truncated.png"]
  bad[0].write_bytes(b"not an image")
  bad[1].write_bytes(next((folder / "test/b").glob("*.png")).read_bytes()[:100])
  with pytest.raises(errors.UserError, match="2 of the 10 images cannot be read") as raised:
    _prepared(folder, tmp_path / "cache")
  assert all(str(path) in str(raised.value) for path in bad)
  assert [p.name for p in (tmp_path / "cache").iterdir()] == [  # Only train's, complete.
    p.name for p in (tmp_path / "cache").iterdir() if (p / "info.json").is_file()
  ]


def test_no_room_and_squashed_images_are_refused(folder, tmp_path, monkeypatch):
  monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: type("U", (), {"free": 1000}))
  with pytest.raises(errors.UserError, match=r"needs about .* GiB in .*cache, which has 0\.0 GiB"):
    _prepared(folder, tmp_path / "cache")
  assert not list((tmp_path / "cache").iterdir())
  monkeypatch.undo()
  with pytest.raises(errors.UserError, match="cache_dir works with each image's own size only"):
    _prepared(folder, tmp_path / "cache", source_image_size=32)
