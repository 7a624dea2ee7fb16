"""Where logged records go: `metrics.jsonl` and TensorBoard, written by process 0 only.

Written here rather than with `clu.metric_writers`, whose TensorBoard writer (and the package
itself, on import) needs TensorFlow, which the usual JAX images lack. TensorBoard's own
`EventFileWriter` would import TensorFlow wherever it is installed (for `tf.io.gfile`), and
tensorboardX imports torch; so the event file is opened here, and TensorBoard's `RecordWriter` and
protos write it, as `EventFileWriter` does.
"""

import json
import os
import pathlib
import socket
import time
from collections.abc import Mapping

import jax
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from jaxresnet import workdir as workdir_lib

Scalars = Mapping[str, float]


class JsonlWriter:
  """Appends one JSON object per record: {"step": s, key: value, ...}."""

  def __init__(self, path: pathlib.Path):
    # Line-buffered: a killed run leaves whole records on disk, up to its last logged step.
    self._file = open(path, "a", buffering=1)  # noqa: SIM115  (kept open for the whole run)

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + "\n")

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class TensorBoardWriter:
  """Scalars as TensorBoard events; a tag's prefix before "/" becomes its panel."""

  def __init__(self, logdir: pathlib.Path):
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
    self._writer = RecordWriter(open(logdir / name, "wb"))  # noqa: SIM115  (closed by close())
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    summary = summary_pb2.Summary(value=values)
    self._write(event_pb2.Event(step=int(step), wall_time=time.time(), summary=summary))

  def _write(self, event: event_pb2.Event) -> None:
    self._writer.write(event.SerializeToString())

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MultiWriter:
  """Every record to each of `writers` (none on processes other than 0)."""

  def __init__(self, writers: list):
    self._writers = writers

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    for writer in self._writers:
      writer.write_scalars(step, scalars)

  def flush(self) -> None:
    for writer in self._writers:
      writer.flush()

  def close(self) -> None:
    for writer in self._writers:
      writer.close()


def create_writer(workdir: pathlib.Path, start_step: int) -> MultiWriter:
  """metrics.jsonl and TensorBoard in `workdir` on process 0; nothing on the others.

  The metrics file is first cut back to `start_step`: what a killed run logged after its last
  checkpoint is logged again by the resumed run, and must not count twice.
  """
  if jax.process_index() != 0:
    return MultiWriter([])
  workdir.mkdir(parents=True, exist_ok=True)
  workdir_lib.read_history(workdir, up_to_step=start_step)
  return MultiWriter([JsonlWriter(workdir / workdir_lib.METRICS_FILE), TensorBoardWriter(workdir)])
