"""Data sets -> numpy batches of uint8 images at their source size, and int32 labels.

- `dataset.py`: the `Dataset` a run builds once from its config; it serves every batch.
- `sources.py`: where examples come from (TFDS, image folders), listed or loaded once per split.
- `batching.py`: which examples make up each batch (seeded, resumable, per process), and loading
  them ahead of the training loop.
- `decode.py`: image files -> RGB pixels, as PIL (hence torchvision) decodes them.
- `cifar10_jpeg.py`: the CIFAR-10 JPEG folder that tests and benchmarks read.

The host only decodes and batches; resizing, flipping and normalising happen on the device
(`jaxresnet/preprocess.py`).
"""
