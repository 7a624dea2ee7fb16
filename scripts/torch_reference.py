"""The paper's recipe in PyTorch: torchvision ResNet-18, PIL transforms, DataLoader, SGD or Adam.

The side-by-side baseline for jaxresnet's speed and accuracy. `scripts/benchmark.py` imports the
pieces below (`create_model`, `create_optimizer`, `train_step`, `eval_step`, `image_folder`,
`create_loader`), so the benchmark times exactly the step and input this script trains with.

    python scripts/torch_reference.py --data cifar10-jpeg \
        --optimizer sgd --weights IMAGENET1K_V1 --epochs 30 --json runs/torch_sgd.json

`--data` is `cifar10` (torchvision's download), `cifar10-jpeg` (the CIFAR-10 JPEG tarball that
jaxresnet trains on, found by `jaxresnet.data.cifar10_jpeg`: $JPEG_TARBALL, else
../shared/datasets/), a folder with `train/<class>/` and `test/<class>/` image folders, or a
`.tar.gz` of such a folder (tarballs are unpacked into a temporary directory). The optimizer's
defaults are the paper's: SGD lr 0.001, momentum 0.9, weight decay 1e-4 (reported 94.98% test
accuracy); Adam lr 0.01, betas (0.9, 0.999), eps 1e-8, no weight decay (91.43%). Batch 128 and
30 epochs as in `configs/sgd.py` (the paper gives neither).
`--weights ""` trains from scratch; without a network, `IMAGENET1K_V1` needs the file in torch's
hub cache, or pass a state-dict path (its `fc`, if any, is replaced, so a body-only one serves).
`--save PATH` writes the trained state dict (as `scripts/compare_torch.py` does for its source).
"""

import argparse
import functools
import json
import pathlib
import sys
import tarfile
import tempfile
import time

import torch
import torchvision
from torch import nn

from convert import layout
from convert.transforms import paper_transform
from jaxresnet.data import cifar10_jpeg

PAPER_OPTIMIZERS = {
  "sgd": {"lr": 0.001, "momentum": 0.9, "weight_decay": 1e-4},
  "adam": {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
}
AUTOCAST = {"float32": None, "bfloat16": torch.bfloat16}


def unpack(tarball: str, into: str) -> pathlib.Path:
  """Unpacks a .tar.gz of an image folder; returns the folder holding `train/` and `test/`."""
  with tarfile.open(tarball) as tar:
    tar.extractall(into, filter="data")
  found = sorted(
    p.parent for p in pathlib.Path(into).rglob("train") if (p.parent / "test").is_dir()
  )
  if not found:
    raise ValueError(f"{tarball} holds no folder with train/ and test/ subfolders.")
  return found[0]


def create_datasets(data: str, image_size: int, root: str) -> tuple:
  """(train, test) datasets: torchvision's CIFAR-10, or an image folder (tarballs unpacked)."""
  if data == "cifar10":
    cifar = torchvision.datasets.CIFAR10
    return (
      cifar(root, train=True, download=True, transform=paper_transform(image_size, train=True)),
      cifar(root, train=False, download=True, transform=paper_transform(image_size)),
    )
  if data == "cifar10-jpeg":
    folder = cifar10_jpeg.unpack(root)
  elif data.endswith((".tar.gz", ".tgz")):
    folder = unpack(data, root)
  else:
    folder = pathlib.Path(data)
  return image_folder(folder, "train", image_size), image_folder(folder, "test", image_size)


def image_folder(
  folder: pathlib.Path, split: str, image_size: int
) -> torchvision.datasets.ImageFolder:
  """The `folder/split/<class>/` images with the paper's transforms (random flips for "train")."""
  return torchvision.datasets.ImageFolder(
    folder / split, paper_transform(image_size, train=split == "train")
  )


def create_loader(
  dataset, batch_size: int, workers: int, pin_memory: bool = False, train: bool = False
) -> torch.utils.data.DataLoader:
  """Training: shuffled, the incomplete last batch dropped (as jaxresnet does); eval: in order."""
  return torch.utils.data.DataLoader(
    dataset,
    batch_size,
    shuffle=train,
    drop_last=train,
    num_workers=workers,
    pin_memory=pin_memory,
    persistent_workers=workers > 0,
  )


def create_loaders(
  train_set, test_set, batch_size: int, workers: int, pin_memory: bool = False
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
  """Training and eval loaders, as `create_loader`."""
  return (
    create_loader(train_set, batch_size, workers, pin_memory, train=True),
    create_loader(test_set, batch_size, workers, pin_memory),
  )


def load_body(model: nn.Module, path: str) -> None:
  """Loads a resnet18 state dict's body into `model`, keeping `model`'s own (fresh) `fc`.

  The file's `fc`, if it has one, is the head of the task it was trained on, which the paper
  replaces; so a body-only state dict (no `fc.*` keys) serves as well. Any other mismatch is a
  state dict of another architecture, named in the error where it is one of torchvision's.
  """
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  body = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
  head = {f"fc.{k}": v for k, v in model.fc.state_dict().items()}
  try:
    model.load_state_dict(body | head)
  except RuntimeError as e:
    guess = layout.guess_arch({k: v.shape for k, v in body.items()})
    hint = f" It looks like a {guess} state dict." if guess else ""
    raise ValueError(f"{path} is not a torchvision resnet18 state dict.{hint}\n{e}") from None


def create_model(
  num_classes: int, weights: str = "", channels_last: bool = False, device: str = "cpu"
) -> nn.Module:
  """torchvision's resnet18 with `weights` (a torchvision name, a state-dict path, with or
  without its `fc`, or "" for none) and a fresh `num_classes` head, as the paper does."""
  name = weights if weights and not pathlib.Path(weights).is_file() else None
  model = torchvision.models.resnet18(weights=name)
  model.fc = nn.Linear(model.fc.in_features, num_classes)
  if weights and name is None:
    load_body(model, weights)
  model = model.to(device)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  return model


def create_optimizer(name: str, params, **overrides) -> torch.optim.Optimizer:
  """SGD or Adam with the paper's hyperparameters, any of them overridden (None: keep)."""
  if name not in PAPER_OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}: choose one of {sorted(PAPER_OPTIMIZERS)}.")
  kwargs = PAPER_OPTIMIZERS[name] | {k: v for k, v in overrides.items() if v is not None}
  return (torch.optim.SGD if name == "sgd" else torch.optim.Adam)(params, **kwargs)


def train_step(
  model: nn.Module,
  optimizer: torch.optim.Optimizer,
  images: torch.Tensor,
  labels: torch.Tensor,
  autocast: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
  """One update; returns the mean loss and the number correct as tensors (no host sync)."""
  model.train()
  with torch.autocast(images.device.type, autocast, enabled=autocast is not None):
    logits = model(images)
    loss = nn.functional.cross_entropy(logits, labels)
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  optimizer.step()
  return loss.detach(), (logits.argmax(-1) == labels).sum()


@torch.inference_mode()
def eval_step(
  model: nn.Module, images: torch.Tensor, labels: torch.Tensor, autocast: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
  """Mean loss and number correct of one eval batch (BatchNorm in eval mode)."""
  model.eval()
  with torch.autocast(images.device.type, autocast, enabled=autocast is not None):
    logits = model(images).float()
  loss = nn.functional.cross_entropy(logits, labels)
  return loss, (logits.argmax(-1) == labels).sum()


def run_epoch(loader, step, device: str, channels_last: bool, max_steps: int) -> dict:
  """Runs `step(images, labels) -> (loss, correct)` over `loader`; returns mean loss, accuracy."""
  loss_sum, correct, count, start = 0.0, 0, 0, time.perf_counter()
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  for i, (images, labels) in enumerate(loader):
    if max_steps and i >= max_steps:
      break
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    loss, right = step(images, labels.to(device, non_blocking=True))
    loss_sum += float(loss) * len(labels)
    correct += int(right)
    count += len(labels)
  seconds = time.perf_counter() - start
  return {
    "loss": loss_sum / count,
    "accuracy": correct / count,
    "examples": count,
    "seconds": seconds,
  }


def train_and_evaluate(args: argparse.Namespace) -> list[dict]:
  """Trains `args.epochs` epochs, evaluating on the test split after each; returns the history."""
  torch.manual_seed(args.seed)
  if args.threads:
    torch.set_num_threads(args.threads)
  device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
  autocast = AUTOCAST[args.dtype]
  with tempfile.TemporaryDirectory() as tmp:
    train_set, test_set = create_datasets(args.data, args.image_size, args.data_root or tmp)
    train_loader, test_loader = create_loaders(
      train_set, test_set, args.batch_size, args.workers, device == "cuda"
    )
    model = create_model(len(train_set.classes), args.weights, args.channels_last, device)
    overrides = {"lr": args.lr, "weight_decay": args.weight_decay}
    optimizer = create_optimizer(args.optimizer, model.parameters(), **overrides)
    history = []
    train_fn = functools.partial(train_step, model, optimizer, autocast=autocast)
    eval_fn = functools.partial(eval_step, model, autocast=autocast)
    for epoch in range(1, args.epochs + 1):
      cl = args.channels_last
      train = run_epoch(train_loader, train_fn, device, cl, args.max_steps)
      test = run_epoch(test_loader, eval_fn, device, cl, 0)
      history.append({"epoch": epoch, "train": train, "test": test})
      print(
        f"epoch {epoch}: train loss {train['loss']:.4f} acc {100 * train['accuracy']:.2f}% "
        f"({train['examples'] / train['seconds']:.1f} img/s), test loss {test['loss']:.4f} "
        f"acc {100 * test['accuracy']:.2f}%",
        flush=True,
      )
      if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps({"args": vars(args), "history": history}))
  if args.save:
    torch.save(model.state_dict(), args.save)
  return history


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--data", default="cifar10", help="cifar10, cifar10-jpeg, an image folder, or a .tar.gz"
  )
  parser.add_argument("--data-root", default="", help="Where cifar10/tarballs go (default: tmp).")
  parser.add_argument("--optimizer", default="sgd", choices=sorted(PAPER_OPTIMIZERS))
  parser.add_argument("--lr", type=float, default=None, help="Default: the paper's.")
  parser.add_argument("--weight-decay", type=float, default=None, help="Default: the paper's.")
  parser.add_argument("--weights", default="IMAGENET1K_V1", help='Name, state-dict path or "".')
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--max-steps", type=int, default=0, help="Per epoch; 0: the whole epoch.")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--image-size", type=int, default=224)
  parser.add_argument("--workers", type=int, default=4)
  parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: default.")
  parser.add_argument("--device", default="", help="cpu or cuda; default: cuda if available.")
  parser.add_argument("--dtype", default="float32", choices=sorted(AUTOCAST))
  parser.add_argument("--channels-last", action="store_true")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", default="", help="Write the per-epoch history here.")
  parser.add_argument("--save", default="", help="Write the trained state dict here.")
  return parser.parse_args(argv)


if __name__ == "__main__":
  train_and_evaluate(parse_args(sys.argv[1:]))
