"""A few minutes on a laptop CPU to see the whole loop work: from scratch, small images.

    python -m jaxresnet.train --config configs/quick.py \
        --config.dataset=imagefolder:/path/to/cifar10-jpeg --workdir runs/quick

ResNet-18 from scratch (no download) at 32x32 on 2,560 training images, 2 epochs of batch 32,
evaluated on the whole test split every epoch: enough to see the loss fall, the accuracy rise
well above chance (10%), checkpoints, metrics and figures written. Adam (lr 0.001, warmup over
the first 0.2 epochs, then cosine decay to 0) learns fastest in so few steps; the decay also
lets BatchNorm's running statistics catch up with the weights, which eval mode uses. Measured on
2 CPU cores with the first 200 test images of each class (2,000; tests/test_train_loop.py): 37.2%
test accuracy, about 100 s end to end; seeds 0, 1, 2 on another draw of 2,560 training images:
36.6%, 38.1%, 36.1%. SGD (momentum 0.9) on that draw: 27-28% with this schedule (lr 0.03-0.05),
21.8% with lr 0.05 constant and batch 64, at a test loss of 6.3 (stale BatchNorm statistics).
Accuracy here says nothing about the paper's numbers, which need the ImageNet weights at 224.
"""

import ml_collections

from configs import adam


def get_config() -> ml_collections.ConfigDict:
  config = adam.get_config()
  config.init_from = ""
  config.image_size = 32
  config.train_split = "train[:2560]"
  config.batch_size = 32
  config.eval_batch_size = 500
  config.learning_rate = 0.001
  config.lr_schedule = "warmup_cosine"
  config.warmup_epochs = 0.2
  config.num_epochs = 2
  config.log_every_steps = 10
  return config
