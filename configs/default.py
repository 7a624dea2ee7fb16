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

  # Data. `dataset` is "cifar10" (TFDS, in memory), "tfds:NAME" (any TFDS image-classification
  # builder, read through its data source: "tfds:cifar100", "tfds:oxford_flowers102"), or
  # "imagefolder:/path": /path/<split>/<class>/ (train/, test/, optional val/), or
  # /path/<class>/: one split, "train", to slice ("train[:80%]").
  config.dataset = "cifar10"
  config.data_dir = ""  # TFDS data_dir; "" means TFDS's default (~/tensorflow_datasets).
  config.label_key = "label"  # tfds:NAME's ClassLabel feature (cifar100: or "coarse_label").
  config.train_split = "train"
  config.eval_split = "test"  # Reported every epoch; never used to select checkpoints.
  config.val_split = ""  # E.g. "train[90%:]" with train_split="train[:90%]"; selects "best".
  # >0: the host first squashes every image to this square (bilinear); 0: each its own size.
  config.source_image_size = 0
  config.batch_size = 128  # Global, over all devices and processes.
  config.eval_batch_size = 256
  config.prefetch_batches = 2
  # Image folders decoded once into this folder (jaxresnet/data/cache.py); "" decodes each epoch.
  config.cache_dir = ""

  # Transforms (jaxresnet/data/transforms.py). "paper": Resize(image_size) + CenterCrop, random
  # horizontal and vertical flips; "imagenet": RandomResizedCrop(image_size, crop_scale,
  # crop_ratio) + a horizontal flip, evaluated at Resize(eval_resize) + CenterCrop(image_size).
  config.transforms = "paper"
  config.image_size = 224
  config.mean = preprocess.IMAGENET_MEAN  # As torchvision's weights expect.
  config.std = preprocess.IMAGENET_STD
  config.hflip = True
  config.vflip = ml_collections.config_dict.placeholder(bool)  # Unset: the preset's.
  config.crop_scale = (0.08, 1.0)
  config.crop_ratio = (3 / 4, 4 / 3)
  # 0: the starting weights' own (torchvision's V2: 232 for 224), else round(image_size / 0.875).
  config.eval_resize = 0

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

  # Hardware. CPU only: the train and evaluate programs split the CPU into this many devices that
  # each run a share of every batch (jaxresnet/parallel.py); 0 picks by image and batch size (one
  # per core where that pays), 1 keeps one device. Changes rounding only, not results.
  config.cpu_devices = 0
  return config
