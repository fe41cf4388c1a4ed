#!/usr/bin/env bash
# Train on one machine with all its GPUs (or CPU processes with --device cpu): one process per device.
# Usage: bash scripts/torchrun_single_node.sh NUM_PROCESSES [extra training.main flags]
set -euo pipefail
NPROC=${1:-8}; shift || true
cd "$(dirname "$0")/.."
.venv/bin/torchrun --standalone --nproc_per_node "$NPROC" -m training.main \
    --model ViT-B-32 \
    --train-data '/data/laion/{00000..41455}.tar' --train-num-samples 135646078 --dataset-resampled \
    --batch-size 256 --precision amp_bf16 --lr 1e-3 --wd 0.2 --warmup 2000 --epochs 32 \
    --local-loss --gather-with-grad --grad-checkpointing \
    --workers 6 --report-to tensorboard --save-most-recent --resume latest --name vit-b-32-laion "$@"
