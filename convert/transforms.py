"""torchvision's transforms of the paper, defined once: for the PyTorch reference
(`scripts/torch_reference.py`), the converter's `--verify`, and the parity tests."""

from torchvision import transforms

from jaxresnet.preprocess import IMAGENET_MEAN, IMAGENET_STD


def paper_transform(image_size: int = 224, *, train: bool = False, square: bool = False):
  """Resize (PIL bilinear), random horizontal and vertical flips in training, ToTensor, Normalize.

  Args:
    image_size: the shorter side after resizing (the paper's `Resize(224)`).
    train: add the paper's `RandomHorizontalFlip` and `RandomVerticalFlip`.
    square: resize to image_size x image_size (`Resize((224, 224))`) instead, so that images of
      any shape stack into one batch; the same on square images.
  """
  flips = [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip()] if train else []
  return transforms.Compose(
    [
      transforms.Resize((image_size, image_size) if square else image_size),
      *flips,
      transforms.ToTensor(),
      transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
  )
