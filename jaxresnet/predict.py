"""Top-k classes of image files and folders: `python -m jaxresnet.predict --workdir DIR PATH...`.

Folders are searched recursively (every file of decode.IMAGE_SUFFIXES, sorted). Images are
decoded in a thread pool and predicted in batches of `--batch_size`, so memory stays bounded for
any number of them, each through the run's own evaluation transforms: decoded to RGB as PIL does,
resized and centre-cropped on the host (`data/transforms.py`), normalised on the device.
`--output` writes one row per image (.csv or .jsonl); a progress line goes to stderr.
"""

import contextlib
import csv
import functools
import json
import os
import pathlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

import jax
import numpy as np
from absl import flags

from jaxresnet import checkpointing, cli, errors, models, reporting, steps
from jaxresnet import workdir as workdir_lib
from jaxresnet.data import batching, decode, sources, transforms

TTA = ("none", "hflip")


class Predictor:
  """A run's checkpoint, compiled once, that predicts image files batch by batch."""

  def __init__(self, workdir: pathlib.Path, which: str = "latest", tta: str = "none"):
    """`tta="hflip"` averages each image's probabilities with its mirror image's."""
    if tta not in TTA:
      raise errors.UserError(f"--tta={tta} is unknown: use one of {', '.join(TTA)}.")
    config = workdir_lib.load_config(workdir)
    self._variables, info, _ = checkpointing.load_trained(workdir, which)
    self.class_names = tuple(info["class_names"])
    resize = info.get("eval_resize") or transforms.eval_resize(config)  # Older checkpoints.
    self._transform = transforms.from_config(config, resize)
    self._prefetch = config.prefetch_batches
    model = models.create_model(info["model"], info["num_classes"], config.dtype)
    step = functools.partial(steps.predict_step, model=model, config=config, hflip=tta == "hflip")
    self._step = jax.jit(step)

  def __call__(
    self, paths: Sequence[pathlib.Path], batch_size: int = 64, unreadable: list[str] | None = None
  ) -> Iterator[tuple[list[pathlib.Path], np.ndarray]]:
    """(paths, probabilities [len(paths), K]) per batch of `paths`, in order.

    Args:
      unreadable: None to stop at the first file PIL cannot read; else a list that collects their
        errors, files that are left out of the batches.
    """
    split = sources.Split(
      labels=np.zeros(len(paths), np.int32), paths=np.array([str(p) for p in paths], dtype=object)
    )
    failed = {}  # Path -> error; a dict since the last batch's padding repeats the first file.
    size = self._transform.output_size

    def load(i: int, draw: None) -> np.ndarray:
      try:
        return self._transform(decode.read_rgb(split.paths[i]), draw)
      except errors.UserError as error:
        if unreadable is None:
          hint = "Or pass --skip_unreadable to list and skip such files."
          raise errors.UserError(f"{error} {hint}") from error
        failed[split.paths[i]] = str(error)
        return np.zeros((size, size, 3), np.uint8)

    # Every batch padded to batch_size (eval_indices' mask), so that one compilation serves all.
    indices = batching.eval_indices(len(paths), batch_size, slice(None))
    batches = batching.load_batches(split, indices, self._prefetch, load)
    for start, batch in zip(range(0, len(paths), batch_size), batches, strict=True):
      kept = [j for j in np.flatnonzero(batch["mask"]) if split.paths[start + j] not in failed]
      probabilities = np.asarray(self._step(self._variables, batch["image"]))
      yield [pathlib.Path(split.paths[start + j]) for j in kept], probabilities[kept]
    if unreadable is not None:
      unreadable += failed.values()


def top_k(probabilities: np.ndarray, k: int) -> np.ndarray:
  """Class indices [N, k] of the `k` largest probabilities of each row, most likely first."""
  return np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]


def write_predictions(
  batches: Iterable[tuple[list[pathlib.Path], np.ndarray]],
  class_names: Sequence[str],
  k: int,
  stream: TextIO,
  fmt: str,
) -> int:
  """Writes each image's top-`k` classes as `fmt` "csv", "jsonl" or "text"; the row count."""
  rows = 0
  writer = csv.writer(stream) if fmt == "csv" else None
  if writer:
    writer.writerow(["path"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "prob")])
  for paths, probabilities in batches:
    for path, p, order in zip(paths, probabilities, top_k(probabilities, k), strict=True):
      classes = [(class_names[i], float(f"{p[i]:.6g}")) for i in order]
      if writer:
        writer.writerow([path, *(v for pair in classes for v in pair)])
      elif fmt == "jsonl":
        names, probs = zip(*classes, strict=True)
        stream.write(json.dumps({"path": str(path), "classes": names, "probabilities": probs}))
        stream.write("\n")
      else:
        stream.write(f"{path}: " + ", ".join(f"{n} {100 * q:.1f}%" for n, q in classes) + "\n")
    rows += len(paths)
  return rows


def output_format(output: str | None) -> str:
  """ "csv" or "jsonl" by the suffix of `output`; "text" without one (printed). An output that
  cannot be written fails here, before any work."""
  if output is None:
    return "text"
  path = pathlib.Path(output)
  suffix = path.suffix.lower()
  if suffix not in (".csv", ".jsonl"):
    raise errors.UserError(f"--output={output}: end it in .csv or .jsonl to choose the format.")
  folder = path.absolute().parent
  if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
    problem = "is a folder" if path.is_dir() else f"cannot be written in {folder}"
    raise errors.UserError(f"--output={output} {problem}: pass a file in a writable folder.")
  return suffix[1:]


def _counted(batches: Iterable, progress: reporting.ImageProgress) -> Iterator:
  """`batches`, updating the progress line after each."""
  for batch in batches:
    yield batch
    progress.update(len(batch[0]))


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise errors.UserError("No images given: pass image files or folders after the flags.")
  if cli.FLAGS.batch_size < 1 or cli.FLAGS.top_k < 1:
    raise errors.UserError("--batch_size and --top_k must be at least 1.")
  fmt = output_format(cli.FLAGS.output)
  paths = decode.find_images(argv[1:])  # Before any work: a missing path fails at once.
  cli.quiet_libraries()
  predictor = Predictor(pathlib.Path(cli.FLAGS.workdir), cli.FLAGS.checkpoint, cli.FLAGS.tta)
  unreadable = [] if cli.FLAGS.skip_unreadable else None
  k = min(cli.FLAGS.top_k, len(predictor.class_names))
  # Not in place between predictions printed to the same terminal.
  live = sys.stderr.isatty() and not (fmt == "text" and sys.stdout.isatty())
  with (
    reporting.ImageProgress(len(paths), live=live) as progress,
    contextlib.ExitStack() as stack,
  ):
    stream = sys.stdout
    if cli.FLAGS.output is not None:
      stream = stack.enter_context(open(cli.FLAGS.output, "w", newline=""))
    batches = _counted(predictor(paths, cli.FLAGS.batch_size, unreadable), progress)
    write_predictions(batches, predictor.class_names, k, stream, fmt)
  if unreadable:
    print(f"Skipped {len(unreadable)} unreadable file(s):", *unreadable, sep="\n", file=sys.stderr)


def define_flags() -> None:
  cli.define_workdir_flag()
  cli.define_checkpoint_flag()
  flags.DEFINE_integer("batch_size", 64, "Images per batch (memory is bounded by a few batches).")
  flags.DEFINE_integer("top_k", 5, "Classes to report per image, most likely first.")
  flags.DEFINE_string("output", None, "Write one row per image to this .csv or .jsonl file.")
  flags.DEFINE_enum("tta", "none", TTA, "hflip: average each image's softmax with its mirror's.")
  flags.DEFINE_bool("skip_unreadable", False, "Skip files PIL cannot read, listing them at the "
                    "end, instead of stopping at the first.")  # fmt: skip


if __name__ == "__main__":
  define_flags()
  cli.run(main)
