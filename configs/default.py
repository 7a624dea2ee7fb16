"""Shared defaults for every jaxresnet run: the paper's data recipe and model.

Variants (`sgd.py`, `adam.py`, ...) import this and override a few fields. Every value the
train loop reads lives here, so `--config.FIELD=VALUE` can change any of them.
"""

import ml_collections

from jaxresnet import preprocess


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config: ResNet-18 on CIFAR-10 at 224x224, as in the paper."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Data. `dataset` is "cifar10" (TFDS) or "imagefolder:/path" (train/, test/, optional val/).
  config.dataset = "cifar10"
  config.data_dir = ""  # TFDS data_dir; "" means TFDS's default (~/tensorflow_datasets).
  config.train_split = "train"
  config.eval_split = "test"  # Reported every epoch; never used to select checkpoints.
  config.val_split = ""  # E.g. "train[90%:]" with train_split="train[:90%]"; selects "best".
  config.source_image_size = 32  # Image-folder images are resized to this on the host.
  config.batch_size = 128  # Global, over all devices and processes.
  config.eval_batch_size = 256
  config.prefetch_batches = 2

  # On-device preprocessing (the paper's torchvision transforms).
  config.image_size = 224
  config.mean = preprocess.IMAGENET_MEAN  # As torchvision's weights expect.
  config.std = preprocess.IMAGENET_STD
  config.hflip = True
  config.vflip = True

  # Model.
  config.model = "resnet18"
  config.num_classes = 0  # 0: the data set's number of classes; otherwise it must match.
  config.dtype = "float32"  # Compute dtype; "bfloat16" keeps float32 parameters and statistics.
  # Converted weights: a directory written by `python -m convert.torch_to_flax`, or a
  # torchvision weights name (e.g. "IMAGENET1K_V1") converted and cached on first use,
  # or "" to train from scratch.
  config.init_from = "IMAGENET1K_V1"
  config.weights_cache_dir = "~/.cache/jaxresnet"  # Where torchvision weights are converted once.

  # Fine-tuning controls (README, "Fine-tuning"). freeze: "none", "head_only" (a linear probe),
  # or the last frozen part: "stem", "layer1", "layer2", "layer3". batchnorm: "train", or
  # "frozen" (every BatchNorm in eval mode, its statistics and affine parameters fixed).
  config.freeze = "none"
  config.batchnorm = "train"
  config.backbone_lr_multiplier = 1.0  # The body's learning rate is learning_rate times this.
  config.weight_decay_bn_bias = True  # False: BatchNorm parameters and biases get no decay.
  # "none", "balanced" (n / (k * n_c) from the training split's counts), or "w1,w2,...,wK":
  # per-class loss weights, as torch.nn.CrossEntropyLoss(weight=...).
  config.class_weights = "none"

  # Optimizer (set by the variants).
  config.optimizer = "sgd"
  config.learning_rate = 0.001
  config.momentum = 0.9
  config.nesterov = False
  config.b1 = 0.9
  config.b2 = 0.999
  config.eps = 1e-8
  config.weight_decay = 0.0
  config.lr_schedule = "constant"  # "constant" or "warmup_cosine".
  config.warmup_epochs = 0.0
  config.label_smoothing = 0.0

  # Loop.
  config.num_epochs = 30
  config.log_every_steps = 50
  config.checkpoint_every_steps = 0  # 0: only at the end of each epoch.
  config.keep_checkpoints = 3
  return config
