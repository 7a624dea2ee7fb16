"""TFDS data sets: CIFAR-10 in memory (`dataset=cifar10`), and any image-classification builder
read example by example (`dataset=tfds:NAME`).

`tfds:NAME` (cifar100, oxford_flowers102, food101, ...) needs a builder with an Image feature and
a ClassLabel feature (`config.label_key`; cifar100 has `label` and `coarse_label`). It is prepared
once in the array_record format and read through `as_data_source`, TFDS's random-access reader:
only the labels are read up front, each image's encoded bytes when its batch is made, decoded by
PIL as image folders are. Nothing else of TensorFlow runs, and no split is held in memory.

Before a download, the builder's own download hosts (its URL infos) are probed, so no network
fails within seconds instead of after TFDS's minutes of retries; builders that need a manual
download say where their files go.
"""

import io
import urllib.parse
from collections.abc import Sequence

import numpy as np

from jaxresnet import errors, network
from jaxresnet.data import decode, sources

TFDS = "tfds:"
_PORTS = {"https": 443, "http": 80}


class TfdsCifar10:
  """CIFAR-10 through TFDS: downloaded and prepared once if needed, splits read into memory."""

  def __init__(self, data_dir: str):
    self._builder = prepared("cifar10", data_dir)
    self.class_names = tuple(self._builder.info.features["label"].names)

  def split(self, spec: str) -> sources.Split:
    # batch_size=-1 would read it in one go, but aborts under tfds.testing.mock_data.
    dataset = self._builder.as_dataset(split=spec, shuffle_files=False).batch(4096)
    batches = list(dataset.as_numpy_iterator())
    images = np.concatenate([batch["image"] for batch in batches])
    labels = np.concatenate([batch["label"] for batch in batches]).astype(np.int32)
    return sources.Split(labels=labels, images=images)


class TfdsSource:
  """A TFDS image-classification builder, prepared as array_record, read through a data source."""

  def __init__(self, name: str, data_dir: str, label_key: str):
    import tensorflow_datasets as tfds  # noqa: PLC0415  (TFDS users only)

    self._name, self._label_key = name, label_key
    self._builder = prepared(name, data_dir, "array_record")
    features = self._builder.info.features
    self._image_key = _only(features, tfds.features.Image, "Image", name)
    labels = sorted(k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel))
    if label_key not in labels:
      raise errors.UserError(
        f"config.label_key = {label_key!r} is not a class label of {name}, whose class labels "
        f"are {labels}: set --config.label_key to one of them."
      )
    self.class_names = tuple(features[label_key].names)
    self._decoders = {self._image_key: tfds.decode.SkipDecoding()}

  def split(self, spec: str) -> sources.Split:
    """The split's labels, read once, and its images' encoded bytes, read when batched."""
    try:
      records = self._builder.as_data_source(split=spec, decoders=self._decoders)
    except (ValueError, KeyError, NotImplementedError) as error:
      raise errors.UserError(
        f"Cannot read split {spec!r} of {self._name}, whose splits are "
        f"{sorted(self._builder.info.splits)}: {error} Change --config.train_split, "
        "--config.eval_split or --config.val_split (TFDS's syntax: 'train[:90%]')."
      ) from error
    labels = np.array([records[i][self._label_key] for i in range(len(records))], np.int32)
    return sources.Split(labels=labels, records=EncodedImages(records, self._image_key, spec))


class EncodedImages:
  """The images of a data source, by index, as RGB PIL images (decode.read_rgb's rules)."""

  def __init__(self, records: Sequence[dict], key: str, name: str):
    self._records, self._key, self._name = records, key, name

  def __len__(self) -> int:
    return len(self._records)

  def rgb(self, index: int):
    encoded = io.BytesIO(self._records[index][self._key])
    return decode.read_rgb(encoded, name=f"example {index} of {self._name}")


def _only(features, kind: type, label: str, name: str) -> str:
  """The key of the one top-level feature of `kind`."""
  keys = [k for k, f in features.items() if isinstance(f, kind)]
  if len(keys) != 1:
    raise errors.UserError(
      f"{name} has {len(keys)} {label} features ({keys}); jaxresnet needs exactly one: choose an "
      "image-classification data set."
    )
  return keys[0]


def prepared(name: str, data_dir: str, file_format: str | None = None):
  """The builder `name`, downloaded and prepared if it was not; offline, fails fast.

  Args:
    file_format: the format to prepare in (None: TFDS's default, tfrecord); a builder prepared
      in another is refused, with the command that converts it.
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415  (TFDS users only)

  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise errors.UserError(
      f"TFDS has no data set {name!r}: see `tfds.list_builders()` or "
      f"https://www.tensorflow.org/datasets/catalog. {str(error).splitlines()[0]}"
    ) from error
  root = builder.data_path.parent.parent
  if builder.is_prepared():
    found = builder.info.file_format.value
    if file_format and found != file_format:
      raise errors.UserError(
        f"{name} is prepared in {builder.data_path} as {found}, not {file_format}, which "
        f"jaxresnet reads example by example: convert it once with `tfds convert_format "
        f"--dataset_dir {builder.data_path} --out_file_format {file_format}`."
      )
    return builder
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    manual = root / "downloads" / "manual"  # TFDS's default manual_dir.
    if not manual.exists() or not any(manual.iterdir()):
      raise errors.UserError(
        f"{name} needs files you download yourself, into {manual}: "
        f"{' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}"
      )
  _check_hosts(name, builder, root, file_format)
  builder.download_and_prepare(file_format=file_format)
  return builder


def _check_hosts(name: str, builder, root, file_format: str | None) -> None:
  """Fails at once, naming them, when the builder's download hosts cannot be reached.

  TFDS retries a failing download for minutes (about 205 s here); the hosts come from the
  builder's URL infos (its registered checksums), so every builder is probed where it downloads.
  """
  hosts = {}
  for url in builder.url_infos or {}:
    parts = urllib.parse.urlparse(url)
    hosts.setdefault(parts.hostname, parts.port or _PORTS.get(parts.scheme, 443))
  unreachable = [host for host, port in hosts.items() if not network.can_reach(host, port)]
  if unreachable:
    fmt = f"file_format='{file_format}'" if file_format else ""
    raise errors.NoNetwork(
      f"{name} is not prepared in {builder.data_path} and cannot be downloaded: "
      f"{', '.join(unreachable)} unreachable (no network?). Either prepare it on a machine with "
      f"a network, python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
      f"data_dir='{root}').download_and_prepare({fmt})\", and copy {root}/{name} to this machine "
      "(or pass --config.data_dir=WHERE_YOU_COPIED_IT), or train on image files with "
      "--config.dataset=imagefolder:PATH (PATH/train/<class>/*.jpg, PATH/test/<class>/*.jpg)."
    )
