#!/usr/bin/env bash
# Every GPU measurement of issues #6 and #15 in one command, in under ~9 minutes:
#
#   OUT=/some/dir scripts/gpu_benchmark.sh
#
# jaxresnet (parallel.jit_train_step / jit_eval_step) and the PyTorch reference (eager NCHW and
# channels_last; bf16 = torch.autocast), at 224x224 and 32x32, bfloat16 then float32, batch 256;
# in bfloat16 also the compiled peers (scripts/bench_compiled.py): torch.compile's default mode
# at both sizes, train and eval, and max-autotune for 224 training, its compile capped at 150 s;
# compile times, memory, MFU (XLA's FLOP count over the card's dense peak) and, when the CIFAR-10
# JPEGs are found, the end-to-end rate with each framework's input pipeline. Writes
# $OUT/benchmark_gpu.{json,md,log} (default OUT: runs/benchmark_gpu); the JSON and table are
# rewritten after every case, so a cut-off run still leaves what it measured.
#
# Needs nothing from the network: `python` (or $PYTHON) must import jax with CUDA (jax[cuda12] or
# jax[cuda13]), flax, optax, orbax-checkpoint, clu, ml_collections, tensorflow-cpu,
# tensorflow-datasets, pillow, torch (CUDA build) and torchvision, e.g. a venv made on a machine
# with a network from `pip install -c constraints.txt -e '.[gpu]'` and carried over; and, for the
# compiled peers, a C compiler (gcc), with which Triton builds its kernel launchers.
# The JPEGs: $JPEG_TARBALL, else ../shared/datasets/ (both as jaxresnet/data/cifar10_jpeg.py
# looks) or shared/datasets/cifar10-jpeg.tar.gz (where a lent machine's checkout has them); a
# .tar.gz or an unpacked folder. Without them the end-to-end column stays empty.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-runs/benchmark_gpu}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"

tarball="${JPEG_TARBALL:-}"
if [[ -z "$tarball" ]]; then
  for candidate in ../shared/datasets/cifar10-jpeg.tar.gz shared/datasets/cifar10-jpeg.tar.gz; do
    if [[ -e "$candidate" ]]; then tarball="$candidate"; break; fi
  done
fi
[[ -n "$tarball" ]] || echo "No CIFAR-10 JPEGs found: skipping the end-to-end rates." >&2

export GIT_COMMIT="${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

# The H100 target first (224, bf16): if anything runs long, it is already measured.
# --time-budget starts no new case after 330 s (the float32 cases, measured before with issue #6,
# are the ones it may skip when compiles run long); `timeout` is the hard stop.
timeout --signal=INT --kill-after=10 540 "$PYTHON" -m scripts.benchmark \
  --device gpu --sizes 224,32 --dtypes bfloat16,float32 --batch-size 256 \
  --steps 20 --repeats 3 --warmup 3 --e2e-steps 20 --time-budget 330 \
  --compile-modes default,max-autotune --compile-dtypes bfloat16 --max-autotune-cap 150 \
  --jpeg-tarball "$tarball" \
  --json "$OUT/benchmark_gpu.json" --table "$OUT/benchmark_gpu.md" 2>&1 | tee "$OUT/benchmark_gpu.log"
