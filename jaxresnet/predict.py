"""Top-5 classes of images: `python -m jaxresnet.predict --workdir DIR IMAGE...`.

Each image goes through the run's own preprocessing: decoded to RGB as PIL does, resized on the
host to the run's source size, then resized and normalised on the device as in evaluation.
"""

import functools
import pathlib

import jax
import numpy as np
from absl import app

from jaxresnet import checkpointing, cli, models, steps
from jaxresnet import workdir as workdir_lib
from jaxresnet.data import decode


def predict(workdir: pathlib.Path, paths: list[pathlib.Path], which: str = "latest", top: int = 5):
  """[(path, [(class name, probability), ...])] with the `top` most likely classes per image."""
  config = workdir_lib.load_config(workdir)
  variables, info, _ = checkpointing.load_trained(workdir, which)
  model = models.create_model(info["model"], info["num_classes"], config.dtype)
  images = np.stack([decode.read_image(p, config.source_image_size) for p in paths])
  predict_step = jax.jit(functools.partial(steps.predict_step, model=model, config=config))
  probs = np.asarray(predict_step(variables, images))
  names = info["class_names"]
  order = np.argsort(-probs, axis=-1)[:, :top]
  return [
    (path, [(names[i], float(p[i])) for i in idx])
    for path, p, idx in zip(paths, probs, order, strict=True)
  ]


def main(argv: list[str]) -> None:
  paths = [pathlib.Path(p) for p in argv[1:]]
  if not paths:
    raise app.UsageError("Pass one or more image files after the flags.")
  cli.quiet_libraries()
  for path, classes in predict(pathlib.Path(cli.FLAGS.workdir), paths, cli.FLAGS.checkpoint):
    print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in classes))


def define_flags() -> None:
  cli.define_workdir_flag()
  cli.define_checkpoint_flag()


if __name__ == "__main__":
  define_flags()
  cli.run(main)
