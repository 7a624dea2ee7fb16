"""Builds the CIFAR-10 JPEG tarball from the official CIFAR-10 python download.

    python -m scripts.make_cifar10_jpeg --output cifar10-jpeg.tar.gz
    python -m scripts.make_cifar10_jpeg --output cifar10-jpeg.tar.gz --source cifar-10-python.tar.gz

For a machine without the shared tarball that `jaxresnet.data.cifar10_jpeg` reads. It writes the
same layout, `cifar10-jpeg/{train,test}/<class>/NNNN.jpg`, NNNN counting each class's images in
the order the official batches hold them (data_batch_1..5 for train, test_batch for test), each a
32x32 RGB JPEG at quality 75 (PIL, 4:2:0 chroma), the settings of the shared tarball. That one is
a public re-encoding, though, and PIL's output is not byte-identical to it: the pixels differ by
a little JPEG noise, so accuracies measured on the two can differ slightly. Compare models on the
same tarball only.

Without --source it downloads the official file (163 MB), after a reachability probe so that
offline it fails within seconds; either way the md5 is verified before any batch is unpickled.
"""

import argparse
import hashlib
import io
import pathlib
import pickle
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator

import numpy as np
from PIL import Image

from jaxresnet import network
from jaxresnet.data import cifar10_jpeg

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
SOURCE_DIR = "cifar-10-batches-py"  # The download's one folder.
BATCHES = {"test": ("test_batch",), "train": tuple(f"data_batch_{i}" for i in range(1, 6))}
QUALITY = 75
MTIME = 1577836800  # Every member's, 2020-01-01, as in the shared tarball.


def md5sum(path: pathlib.Path) -> str:
  digest = hashlib.md5()
  with open(path, "rb") as file:
    for block in iter(lambda: file.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def verify_md5(path: pathlib.Path, expected: str = MD5) -> None:
  """Raises ValueError unless `path` is the official download (its batches are pickles)."""
  actual = md5sum(path)
  if actual != expected:
    raise ValueError(
      f"{path} has md5 {actual}, not {expected}: it is not the official cifar-10-python.tar.gz "
      f"(or the download was cut short). Fetch {URL} again."
    )


def download(download_dir: pathlib.Path) -> pathlib.Path:
  """The official download in `download_dir`, fetched unless already there."""
  path = download_dir / URL.rsplit("/", 1)[1]
  if path.is_file():
    return path
  network.check_reachable(
    URL,
    "CIFAR-10",
    f"Download {URL} (md5 {MD5}) on a machine with a network, copy it here and pass --source PATH.",
  )
  print(f"Downloading {URL} ...", flush=True)
  partial = path.with_name(path.name + ".partial")
  download_dir.mkdir(parents=True, exist_ok=True)
  urllib.request.urlretrieve(URL, partial)
  partial.replace(path)
  return path


def read_split(source: tarfile.TarFile, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, 32, 32, 3] images, int [N] labels) of a split, in the batches' order."""
  images, labels = [], []
  for name in BATCHES[split]:
    batch = pickle.load(source.extractfile(f"{SOURCE_DIR}/{name}"), encoding="bytes")
    images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels.append(np.asarray(batch[b"labels"]))
  return np.concatenate(images), np.concatenate(labels)


def encode_jpeg(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "JPEG", quality=QUALITY)
  return buffer.getvalue()


def _entries(source: tarfile.TarFile) -> Iterator[tuple[str, bytes | None]]:
  """(name, JPEG bytes, or None for a folder), in the shared tarball's (sorted) order."""
  yield cifar10_jpeg.TOP_DIR, None
  for split in sorted(BATCHES):
    images, labels = read_split(source, split)
    yield f"{cifar10_jpeg.TOP_DIR}/{split}", None
    for label, class_name in enumerate(cifar10_jpeg.CLASSES):
      yield f"{cifar10_jpeg.TOP_DIR}/{split}/{class_name}", None
      for index, image in enumerate(images[labels == label]):
        yield cifar10_jpeg.member(split, class_name, index), encode_jpeg(image)


def convert(source: pathlib.Path, output: pathlib.Path) -> dict[str, int]:
  """Writes the JPEG tarball at `output` from the python-version tarball `source`.

  Returns:
    The number of images written per split.
  """
  counts = dict.fromkeys(BATCHES, 0)
  output.parent.mkdir(parents=True, exist_ok=True)
  partial = output.with_name(output.name + ".partial")  # No half-written `output` on failure.
  with tarfile.open(source) as tar_in, tarfile.open(partial, "w:gz") as tar_out:
    for name, data in _entries(tar_in):
      info = tarfile.TarInfo(name)
      info.mtime = MTIME
      if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar_out.addfile(info)
      else:
        info.size, info.mode = len(data), 0o644
        tar_out.addfile(info, io.BytesIO(data))
        counts[name.split("/")[1]] += 1
  partial.replace(output)
  return counts


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output", required=True, type=pathlib.Path, help="The .tar.gz to write.")
  parser.add_argument(
    "--source", type=pathlib.Path, help="cifar-10-python.tar.gz already here: no download."
  )
  parser.add_argument(
    "--download-dir", type=pathlib.Path, help="Keep (and reuse) the download here; default: tmp."
  )
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    try:
      source = args.source or download(args.download_dir or pathlib.Path(tmp))
      verify_md5(source)
    except (ConnectionError, ValueError) as error:
      raise SystemExit(f"make_cifar10_jpeg: {error}") from error
    counts = convert(source, args.output)
  print(f"Wrote {args.output}: {counts['train']} train and {counts['test']} test images.")


if __name__ == "__main__":
  main()
