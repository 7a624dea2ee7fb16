"""Test-session setup.

torchvision must be imported before TensorFlow (tfds, clu.metric_writers): the other order
segfaults, because the two ship clashing LLVMs. pytest imports this file first.
"""

import torchvision  # noqa: F401  (import order matters, see above)
