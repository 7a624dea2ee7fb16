"""Weight converters between torchvision and jaxresnet; the only package that imports torch."""
