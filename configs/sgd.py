"""The paper's SGD run: torchvision's ImageNet ResNet-18, fresh 10-class head, CIFAR-10 at 224.

    python -m jaxresnet.train --config configs/sgd.py --workdir runs/sgd

The paper reports 94.98% test accuracy (PyTorch). SGD lr 0.001, momentum 0.9, weight decay 1e-4
added to the gradient as torch.optim.SGD does, constant learning rate. The paper gives no batch
size or epoch count (its curves run past 50 epochs); we choose batch 128 (a common default
that fits any GPU at 224) and 30 epochs (its curves have flattened well before). Not yet run at
full scale on the machines this project is built on (no GPU, no download): see the README.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.optimizer = "sgd"
  config.learning_rate = 0.001
  config.momentum = 0.9
  config.weight_decay = 1e-4
  return config
