"""The paper's Adam run: torchvision's ImageNet ResNet-18, fresh 10-class head, CIFAR-10 at 224.

    python -m jaxresnet.train --config configs/adam.py --workdir runs/adam

The paper reports 91.43% test accuracy (PyTorch). Adam lr 0.01, betas 0.9/0.999, eps 1e-8, no
weight decay, constant learning rate; batch 128 and 30 epochs as in `sgd.py` (the paper gives
neither). lr 0.01 is high for Adam on pretrained weights, which is likely why it ends below SGD.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.optimizer = "adam"
  config.learning_rate = 0.01
  config.b1 = 0.9
  config.b2 = 0.999
  config.eps = 1e-8
  config.weight_decay = 0.0
  return config
