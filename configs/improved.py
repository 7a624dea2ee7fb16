"""A recipe aiming above the paper's 94.98%: SGD with warmup, cosine decay and label smoothing.

    python -m jaxresnet.train --config configs/improved.py --workdir runs/improved

UNTESTED AT FULL SCALE (no GPU or ImageNet weights where this project is built). Reasoning,
from the paper's own SGD run (constant lr 0.001, 94.98%):
  - A constant rate never anneals: the last epochs keep bouncing at the same noise level.
    Cosine decay to zero typically adds about a point in fine-tuning, and costs nothing.
  - The fresh head starts random while the body is ImageNet-trained; a 1-epoch linear warmup
    keeps the first large, noisy head gradients from wrecking the pretrained features, which
    allows a 10x higher peak rate (0.01), i.e. more progress per epoch.
  - Nesterov momentum and weight decay 5e-4 (the usual CIFAR values) regularise a little more
    than 1e-4; label smoothing 0.1 curbs over-confidence on 50k images.
  - 15 epochs: with a decaying schedule the run ends converged instead of being cut off.
The small-scale A/B against `sgd.py` (same budget, from scratch on the shared JPEGs, the only
comparison possible here) is in the README; it favours any larger rate and so does not prove the
fine-tuning claim.
"""

import ml_collections

from configs import sgd


def get_config() -> ml_collections.ConfigDict:
  config = sgd.get_config()
  config.learning_rate = 0.01
  config.nesterov = True
  config.weight_decay = 5e-4
  config.lr_schedule = "warmup_cosine"
  config.warmup_epochs = 1.0
  config.label_smoothing = 0.1
  config.num_epochs = 15
  return config
