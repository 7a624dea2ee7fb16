"""Top-5 classes of images: `python -m jaxresnet.predict --workdir DIR IMAGE...`.

Each image goes through the run's own preprocessing: decoded to RGB as PIL does, resized on the
host to the run's source size, then resized and normalised on the device as in evaluation.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image, UnidentifiedImageError

from jaxresnet import checkpointing, evaluate, models, preprocess

FLAGS = flags.FLAGS


def load_image(path: pathlib.Path, size: int) -> np.ndarray:
  """uint8 [size, size, 3], as the image-folder pipeline decodes and resizes it."""
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
      if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
      return np.asarray(image)
  except (OSError, UnidentifiedImageError) as e:
    raise ValueError(f"Cannot read image {path}: {e}. Pass a JPEG or PNG file.") from e


def predict(workdir: pathlib.Path, paths: list[pathlib.Path], which: str = "latest", top: int = 5):
  """[(path, [(class name, probability), ...])] with the `top` most likely classes per image."""
  config = evaluate.load_config(workdir)
  variables, info, _ = checkpointing.load_trained(workdir, which)
  model = models.create_model(info["model"], info["num_classes"], models.DTYPES[config.dtype])
  source_size = config.source_image_size
  images = np.stack([load_image(p, source_size) for p in paths])

  @jax.jit
  def probabilities(variables, images):
    logits = model.apply(variables, preprocess.preprocess(images, config), train=False)
    return jax.nn.softmax(logits)

  probs = np.asarray(probabilities(variables, jnp.asarray(images)))
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
  for path, classes in predict(pathlib.Path(FLAGS.workdir), paths, FLAGS.checkpoint):
    print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in classes))


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A training workdir.")
  flags.DEFINE_string("checkpoint", "latest", "latest, best (chosen on validation) or a step.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
