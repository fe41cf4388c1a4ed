"""Numbers and names shared across the library and the trainer, each defined once (open_clip's `constants` too)."""

from __future__ import annotations

import math

# normalisation statistics (the same numbers as open_clip's constants.py)
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

# file names of a model folder on the Hugging Face hub (or a local-dir: folder), as open_clip writes them
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
HF_CONFIG_NAME = "open_clip_config.json"

# model-name schemes
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"

DEFAULT_CONTEXT_LENGTH = 77  # every OpenAI CLIP text tower was trained with 77 positions
INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature, as a log scale

# open_clip's pooler names -> ours
HF_POOLER_ALIASES = {
    "mean_pooler": "mean",
    "max_pooler": "max",
    "cls_pooler": "cls",
    "cls_last_hidden_state_pooler": "cls_last_hidden_state",
}
