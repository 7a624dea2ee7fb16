"""jaxresnet: torchvision's ResNets in Flax, fine-tuned on CIFAR-10 or your own images."""
