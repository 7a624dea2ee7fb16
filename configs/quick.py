"""A few minutes on a laptop CPU to see the whole loop work: from scratch, small images.

    python -m jaxresnet.train --config configs/quick.py \
        --config.dataset=imagefolder:/path/to/cifar10-jpeg --workdir runs/quick

ResNet-18 from scratch (no download) at 32x32 on the first 2,560 training images, 2 epochs of
SGD, evaluated on the whole test split every epoch: enough to see the loss fall, the accuracy
rise well above chance (10%), checkpoints, metrics and figures written. Accuracy here says
nothing about the paper's numbers, which need the ImageNet weights at 224.
"""

import ml_collections

from configs import sgd


def get_config() -> ml_collections.ConfigDict:
  config = sgd.get_config()
  config.init_from = ""
  config.image_size = 32
  config.train_split = "train[:2560]"
  config.batch_size = 64
  config.eval_batch_size = 500
  config.learning_rate = 0.05  # From scratch needs a larger step than fine-tuning.
  config.num_epochs = 2
  config.log_every_steps = 10
  return config
