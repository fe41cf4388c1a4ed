#!/usr/bin/env bash
# The CUDA checks, in one command for a machine with an NVIDIA GPU: the cuda-marked tests, the MNIST demo trained
# on the GPU with amp and with amp_bf16, and the GPU benchmark suite against open_clip with MFU (FLOP/s against the
# measured bf16 matmul peak), the ViT-B-16 bf16 step at a card-filling batch ($FILL_BATCH, default 512) included.
# Everything it measures goes to $OUT (default gpu-check/): gpu.txt, cuda-tests.log, demo-{amp,amp_bf16}.{log,json},
# bench-fill.{log,json} (the card-filling step, with its peak memory) and bench-gpu.{log,json} (the suite, without
# memory: fresh processes per case and side would cost minutes; the JSON is written after every case). Each benchmark
# step has a time limit, so that the whole stays under about 8 minutes on one H200 (an estimate: it has not run on
# one yet); what a limit cut off is missing from the JSON, and the log says so.
#
# A machine without package registries needs our dependencies as wheels in .whl/ (docs/devices.md lists them);
# they are installed into /tmp/site and the repo is used from its source tree, without `pip install -e`.
# Usage: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
FILL_BATCH=${FILL_BATCH:-512}
$PY -m pytest -q -p no:cacheprovider -m cuda tests/training/test_devices.py tests/tools/test_mfu.py 2>&1 \
    | tee "$OUT/cuda-tests.log"
for precision in amp amp_bf16; do
    DEMO_RUN=gpu-$precision PY=$PY bash scripts/mnist_demo.sh --device cuda --precision "$precision" --workers 4 \
        2>&1 | tee "$OUT/demo-$precision.log"
    cp "logs/gpu-$precision/results.json" "$OUT/demo-$precision.json"
done
timeout 120 $PY -m bench.run --suite gpu --device cuda --mfu --repeats 5 --only "ViT-B-16 b$FILL_BATCH " \
    --fill-batch "$FILL_BATCH" --out "$OUT/bench-fill.json" 2>&1 | tee "$OUT/bench-fill.log" \
    || echo "bench-fill: stopped ($?)" | tee -a "$OUT/bench-fill.log"
timeout 90 $PY -m bench.run --suite gpu --device cuda --repeats 5 --no-memory --only "RN50 b128" \
    --out "$OUT/bench-rn50-layout.json" 2>&1 | tee "$OUT/bench-rn50-layout.log" \
    || echo "bench-rn50-layout: stopped ($?)" | tee -a "$OUT/bench-rn50-layout.log"  # channels-last vs NCHW
timeout 240 $PY -m bench.run --suite gpu --device cuda --mfu --repeats 3 --no-memory --fill-batch "$FILL_BATCH" \
    --out "$OUT/bench-gpu.json" 2>&1 | tee "$OUT/bench-gpu.log" \
    || echo "bench-gpu: stopped ($?)" | tee -a "$OUT/bench-gpu.log"
