"""Data sets -> numpy batches of uint8 images and int32 labels.

- `dataset.py`: the `Dataset` a run builds once from its config; it serves every batch.
- `sources.py`: `Split`s, and image folders, scanned once.
- `tfds_sources.py`: TFDS CIFAR-10 in memory, and any TFDS image-classification data set read
  example by example (`dataset=tfds:NAME`).
- `cache.py`: image folders decoded once into a memory-mapped cache (`config.cache_dir`).
- `batching.py`: which examples make up each batch (seeded, resumable, per process), and loading
  them ahead of the training loop.
- `decode.py`: image files -> RGB pixels, as PIL (hence torchvision) decodes them.
- `transforms.py`: the host's half of torchvision's transforms (resizes, centre and random crops
  that depend on each image's size), on PIL images; the `transforms` presets.
- `cifar10_jpeg.py`: the CIFAR-10 JPEG folder that tests and benchmarks read.

The host decodes, crops to one size, and batches; the remaining resize, flips and normalisation
happen on the device (`jaxresnet/preprocess.py`).
"""
