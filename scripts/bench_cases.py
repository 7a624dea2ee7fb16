"""The benchmark's cases: jaxresnet's and the PyTorch reference's steps, pure and end to end.

What a step is given (each product's design):
  pure step   jaxresnet: uint8 32x32 source images resident on the device; the step resizes
              (PIL-exact), flips, normalizes, then updates. torch: float32 tensors already at the
              target size and normalized (what the paper's DataLoader yields), resident on the
              device. Same model, batch, optimizer and device.
  end to end  each input pipeline on the real CIFAR-10 JPEGs: jaxresnet's image-folder data set
              (PIL decoding in a thread pool) -> `to_global` -> step; torch's ImageFolder + PIL
              transforms + DataLoader -> `.to(device)` -> step.
"""

# isort: off
# Before anything that may import TensorFlow (the TFDS source): the other order segfaults.
import torchvision  # noqa: F401

# isort: on
import argparse
import itertools
import pathlib
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import torch
from jax.sharding import Mesh

from configs import default
from jaxresnet import models, optimizers, parallel, steps
from jaxresnet.data import dataset as dataset_lib
from scripts import bench_compiled, torch_reference
from scripts.bench_timing import Runner, interleaved_rounds, measure_memory, timed

NUM_CLASSES = 10
SOURCE_SIZE = 32  # CIFAR-10's images, what jaxresnet's host ships.
TRAIN_IMAGES = 50_000  # CIFAR-10's, for the learning-rate schedule's steps per epoch.


def make_config(size: int, dtype: str, batch_size: int) -> ml_collections.ConfigDict:
  """The default config (SGD, as configs/sgd.py) at this resolution, dtype and batch size."""
  config = default.get_config()
  config.image_size, config.dtype = size, dtype
  config.batch_size = config.eval_batch_size = batch_size
  config.num_classes, config.init_from = NUM_CLASSES, ""
  config.weight_decay = 1e-4  # The paper's SGD, so both optimizers do the decay work.
  return config


def synthetic_uint8(batch_size: int, masked: bool = False) -> dict[str, np.ndarray]:
  """A fixed batch of random CIFAR-sized uint8 images, as jaxresnet's host pipeline yields."""
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.integers(0, 256, (batch_size, SOURCE_SIZE, SOURCE_SIZE, 3), np.uint8),
    "label": (np.arange(batch_size) % NUM_CLASSES).astype(np.int32),
  }
  if masked:
    batch["mask"] = np.ones(batch_size, bool)
  return batch


def jax_train_batches(config: ml_collections.ConfigDict, folder: pathlib.Path) -> Iterator[dict]:
  """jaxresnet's data set on the image folder: endless host batches of its train split."""
  config = config.copy_and_resolve_references()
  config.dataset = f"imagefolder:{folder}"
  config.source_image_size = SOURCE_SIZE  # Squares: shipped as they are, resized on the device.
  return dataset_lib.create_dataset(config, [config.train_split]).train_batches()


def torch_train_batches(
  folder: pathlib.Path, config: ml_collections.ConfigDict, workers: int, pin_memory: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
  """The reference's training input (ImageFolder, PIL transforms, DataLoader), epoch after epoch."""
  train_set = torch_reference.image_folder(folder, "train", config.image_size)
  loader = torch_reference.create_loader(
    train_set, config.batch_size, workers, pin_memory, train=True
  )
  return itertools.chain.from_iterable(itertools.repeat(loader))


def jax_runners(config: ml_collections.ConfigDict, mesh: Mesh) -> tuple[list[Runner], dict]:
  """jaxresnet's train and eval steps on resident synthetic batches; and the train step's
  runner for the end-to-end run, with XLA's FLOP count."""
  model = models.create_model(config.model, NUM_CLASSES, config.dtype)
  tx = optimizers.create_optimizer(config, steps_per_epoch=TRAIN_IMAGES // config.batch_size)
  variables = models.init_variables(model, jax.random.key(0))
  state = steps.create_train_state(model, variables, tx)
  holder = {"state": jax.device_put(state, parallel.replicated(mesh))}
  rng = jax.random.key(1)
  train_batch = parallel.to_global(synthetic_uint8(config.batch_size), mesh)

  train_step = parallel.jit_train_step(config, mesh)
  lowered, lower_s = timed(lambda: train_step.lower(holder["state"], train_batch, rng))
  compiled, compile_s = timed(lowered.compile)
  # The lowered HLO's count, where the backend gives one (XLA:CPU). A GPU gives none, and its
  # compiled count misses the cuDNN convolutions (158 MFLOP/image at 224 on an H200), so no MFU
  # there: scale this script's CPU count (9.94 GFLOP/image at 224) instead, as the docs do.
  cost = lowered.cost_analysis()
  flops = cost["flops"] / config.batch_size if cost else float("nan")
  memory = compiled.memory_analysis()
  step_bytes = (
    memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    + memory.temp_size_in_bytes
    - memory.alias_size_in_bytes
  )

  def run_train(n: int, batches: Iterator | None = None) -> None:
    step_metrics = None  # n = 0 (--warmup 0) runs no step.
    for _ in range(n):
      batch = train_batch if batches is None else parallel.to_global(next(batches), mesh)
      holder["state"], step_metrics = train_step(holder["state"], batch, rng)
    jax.block_until_ready((holder["state"], step_metrics))

  eval_step = parallel.jit_eval_step(model, config, mesh)
  eval_batch = parallel.to_global(synthetic_uint8(config.batch_size, masked=True), mesh)

  # The train state's variables as they are when called: training donates the old buffers.
  def eval_variables() -> dict:
    return steps.variables_of(holder["state"])

  _, eval_compile_s = timed(lambda: eval_step.lower(eval_variables(), eval_batch).compile())

  def run_eval(n: int) -> None:
    jax.block_until_ready([eval_step(eval_variables(), eval_batch) for _ in range(n)])

  _, first_s = timed(lambda: run_train(1))
  _, eval_first_s = timed(lambda: run_eval(1))
  train_setup = {
    "trace_lower_s": lower_s,
    "compile_s": compile_s,
    "first_step_s": first_s,
    "step_memory_mib_xla": step_bytes / 2**20,
  }
  eval_setup = {"compile_s": eval_compile_s, "first_step_s": eval_first_s}
  runners = [
    Runner("jaxresnet", "train", run_train, train_setup),
    Runner("jaxresnet", "eval", run_eval, eval_setup),
  ]
  return runners, {"run_train": run_train, "flops_per_image": flops}


def torch_runners(
  config: ml_collections.ConfigDict,
  device: str,
  channels_last: bool,
  peer: bench_compiled.Peer | None = None,
) -> tuple[list[Runner], dict]:
  """The reference's train and eval steps on resident normalized float batches; with a peer,
  on its `torch.compile`d model, and its kinds of step only."""
  torch.manual_seed(0)
  name = peer.framework if peer else "torch_cl" if channels_last else "torch"
  model = torch_reference.create_model(NUM_CLASSES, "", channels_last, device)
  optimizer = torch_reference.create_optimizer(
    config.optimizer,
    model.parameters(),
    lr=config.learning_rate,
    momentum=config.momentum,
    weight_decay=config.weight_decay,
  )
  if peer:
    model = torch.compile(model, mode=peer.mode, dynamic=False)
  autocast = torch_reference.AUTOCAST[config.dtype]
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  shape = (config.batch_size, 3, config.image_size, config.image_size)
  images = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
  labels = torch.arange(config.batch_size, device=device) % NUM_CLASSES
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def run_train(n: int, batches: Iterator | None = None) -> None:
    for _ in range(n):
      x, y = (images, labels) if batches is None else next(batches)
      x = x.to(device, non_blocking=True, memory_format=memory_format)
      torch_reference.train_step(model, optimizer, x, y.to(device, non_blocking=True), autocast)
    sync()

  def run_eval(n: int) -> None:
    for _ in range(n):
      torch_reference.eval_step(model, images, labels, autocast)
    sync()

  setup = {"compile_cap_s": peer.cap_s} if peer and peer.cap_s else {}
  steps_by_kind = {"train": run_train, "eval": run_eval}
  kinds = peer.kinds if peer else ("train", "eval")
  runners = [Runner(name, kind, steps_by_kind[kind], dict(setup)) for kind in kinds]
  return runners, {"run_train": run_train}


def end_to_end(
  run_train: Callable,
  framework: str,
  config: ml_collections.ConfigDict,
  folder: pathlib.Path,
  device: str,
  args: argparse.Namespace,
) -> dict:
  """Rate of `run_train` fed by the framework's own input pipeline from the JPEG folder."""
  if framework == "jaxresnet":
    batches = jax_train_batches(config, folder)
  else:
    batches = torch_train_batches(folder, config, args.workers, device == "cuda")
  _, startup_s = timed(lambda: run_train(args.warmup, batches))
  rates = []
  for _ in range(min(args.repeats, 3)):
    _, seconds = timed(lambda: run_train(args.e2e_steps, batches))
    rates.append(args.e2e_steps * config.batch_size / seconds)
  return {
    "img_s": max(rates),
    "rates": rates,
    "steps_per_round": args.e2e_steps,
    "startup_and_warmup_s": startup_s,
  }


def run_case(
  size: int,
  dtype: str,
  batch_size: int,
  steps_per_round: int,
  device: str,
  folder: pathlib.Path | None,
  args: argparse.Namespace,
) -> list[dict]:
  """Every framework's train/eval rates at one (size, dtype, batch size), interleaved; on a CPU,
  jaxresnet splits it into the devices `jaxresnet.train` would (`parallel.cpu_device_count`)."""
  config = make_config(size, dtype, batch_size)
  if device == "cpu":
    config.cpu_devices = parallel.cpu_device_count(0, size, [batch_size])
  mesh = parallel.create_mesh(config.cpu_devices if device == "cpu" else None)
  torch_device = "cuda" if device == "gpu" else "cpu"
  jax_rs, jax_extra = jax_runners(config, mesh)
  built = {"jaxresnet": (jax_rs, jax_extra)}
  for channels_last in (False, True):
    runners, extra = torch_runners(config, torch_device, channels_last)
    for runner in runners:
      _, runner.setup["first_step_s"] = timed(lambda r=runner: r.run(1))
    built[runners[0].framework] = (runners, extra)
  peers = bench_compiled.case_peers(size, dtype, args)
  for peer in peers:
    built[peer.framework] = torch_runners(config, torch_device, True, peer)
  bench_compiled.compile_runners([r for peer in peers for r in built[peer.framework][0]])
  runners = [r for rs, _ in built.values() for r in rs if "error" not in r.setup]
  interleaved_rounds(runners, args.warmup, args.repeats, steps_per_round, batch_size)
  for runner in runners:
    measure_memory(runner, torch_device, steps_per_round)

  results = []
  for framework, (rs, extra) in built.items():
    row = {
      "size": size,
      "dtype": dtype,
      "batch_size": batch_size,
      "framework": framework,
      "steps_per_round": steps_per_round,
      "rounds": args.repeats,
      "flops_per_image_xla": jax_extra["flops_per_image"],
      "config": config.to_dict(),
    }
    for r in rs:
      row[r.kind] = r.summary()
    failed = any("error" in r.setup for r in rs)  # A compile past its cap: no step to feed.
    if folder is not None and args.e2e_steps and not failed:
      try:
        row["e2e"] = end_to_end(extra["run_train"], framework, config, folder, torch_device, args)
      except Exception as error:  # noqa: BLE001 (e.g. a small /dev/shm for DataLoader workers)
        row["e2e"] = {"error": f"{type(error).__name__}: {error}"}
    results.append(row)
  del built, runners
  if torch_device == "cuda":
    torch.cuda.empty_cache()
  return results
