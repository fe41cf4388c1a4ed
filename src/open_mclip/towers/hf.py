"""A Hugging Face transformers encoder as text tower (optional: needs `pip install open_mclip[hf]`).

Parameter names mirror open_clip's `HFTextEncoder` (`transformer.*` is the Hugging Face model, `proj.*` the
head), so open_clip `CustomTextCLIP` checkpoints with Hugging Face text towers load unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import HF_POOLER_ALIASES, HFTextConfig
from ..extras import import_extra
from .base import Tower, params_of
from .text import PaddingFree, run_groups

log = logging.getLogger(__name__)

# where each encoder family keeps its transformer layers: BERT/RoBERTa/XLM-R, T5/mT5 stacks, M2M100/NLLB
# encoders, DistilBERT
_BLOCK_PATHS = ("encoder.layer", "block", "layers", "transformer.layer")
# top-level children that run after the last layer: BERT's pooler, T5's and M2M100's final norms
_HEAD_CHILDREN = ("pooler", "final_layer_norm", "layer_norm")


def _import_transformers() -> Any:
    return import_extra("transformers", extra="hf", needed_for="a model with a Hugging Face text tower")


def _hf_config(cfg: HFTextConfig) -> Any:
    """The Hugging Face model config: built from `model_type` offline, or read from `model_name`."""
    auto_config = _import_transformers().AutoConfig
    if cfg.model_type:
        return auto_config.for_model(cfg.model_type, **cfg.model_kwargs)
    return auto_config.from_pretrained(cfg.model_name, **cfg.model_kwargs)


def _model_class(hf_config: Any) -> type:
    """The base model class for a config; for encoder-decoder models the encoder-only class where one exists."""
    transformers = _import_transformers()
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    name = MODEL_MAPPING_NAMES.get(hf_config.model_type)
    if name is None:
        raise ValueError(f"transformers has no base model for model type {hf_config.model_type!r}")
    name = name if isinstance(name, str) else name[0]
    encoder_only = name.removesuffix("Model") + "EncoderModel"
    if hf_config.is_encoder_decoder and hasattr(transformers, encoder_only):  # T5 family: no decoder to build
        name = encoder_only
    return getattr(transformers, name)


def _build_transformer(cfg: HFTextConfig, hf_config: Any, *, load_weights: bool, pooling_layer: bool) -> nn.Module:
    """The Hugging Face encoder alone (the encoder stack of encoder-decoder models), as open_clip keeps it."""
    encoder_decoder = hf_config.is_encoder_decoder  # read first: T5 encoder-only classes reset it
    model_class = _model_class(hf_config)
    kwargs = {}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        kwargs["add_pooling_layer"] = pooling_layer
    if load_weights:
        model = model_class.from_pretrained(cfg.model_name, config=hf_config, **kwargs)
    else:
        model = model_class(hf_config, **kwargs)
    return model.encoder if encoder_decoder else model


def _find_blocks(transformer: nn.Module) -> nn.ModuleList:
    for path in _BLOCK_PATHS:
        module = transformer
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(
        f"cannot find the transformer layers of {type(transformer).__name__} (looked for {list(_BLOCK_PATHS)}); "
        "locking needs them"
    )


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


class ResidualProjection(nn.Module):
    """A linear map to `embed_dim`, then `layers` blocks x <- LayerNorm(x + dropout(W gelu(x))), one shared norm.

    The text head of the Habana-trained multilingual CLIP (RN50x4 + XLM-R); names follow its checkpoints.
    """

    def __init__(self, width: int, embed_dim: int, *, layers: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(width, embed_dim, bias=bias)
        self.linear_layers = nn.ModuleList(nn.Linear(embed_dim, embed_dim, bias=bias) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear1(x)  # (batch, embed_dim)
        for linear in self.linear_layers:
            x = self.layer_norm(x + self.dropout(linear(F.gelu(x))))
        return x


def build_projection(cfg: HFTextConfig, width: int, embed_dim: int) -> nn.Module:
    """The head from pooled width to `embed_dim`; "mlp" is open_clip's (hidden width (width + embed_dim) // 2)."""
    if cfg.proj_type == "none":
        if width != embed_dim:
            raise ValueError(
                f"proj_type 'none' needs the text width ({width}) to equal embed_dim ({embed_dim}); "
                "use proj_type 'linear' or 'mlp'"
            )
        return nn.Identity()
    if cfg.proj_type == "linear":
        return nn.Linear(width, embed_dim, bias=cfg.proj_bias)
    if cfg.proj_type == "mlp":
        hidden = (width + embed_dim) // 2
        return nn.Sequential(
            nn.Linear(width, hidden, bias=cfg.proj_bias), nn.GELU(), nn.Linear(hidden, embed_dim, bias=cfg.proj_bias)
        )
    return ResidualProjection(width, embed_dim, layers=cfg.proj_layers, bias=cfg.proj_bias, dropout=cfg.proj_dropout)


class HFTextTower(Tower, PaddingFree):
    """A Hugging Face encoder, pooled over real tokens (mask: `text != pad_token_id`), then projected.

    Padding-free (the default, `set_padding_free`): each row runs only up to its last real token (rows of similar
    length grouped, each group cut after its longest row). Padding is masked out of attention and out of the
    mean/max poolers, and the first token is the same, so the features do not change. In training, dropout draws
    its masks per group.

    Locking (`lock(unlocked_layers, freeze_norm_stats=...)`) counts the encoder's transformer layers for every
    family (BERT/RoBERTa/XLM-R `encoder.layer`, T5/mT5 `block`, M2M100/NLLB `layers`). The embeddings unlock
    with the bottom layer, i.e. only when every layer is unlocked; the model's own pooling layer and final norm
    unlock with any layer. Unlike other towers, the projection head is new, so it stays trainable even at
    `unlocked_layers=0`. `freeze_norm_stats` follows open_clip's `freeze_layer_norm`: False (the default, as
    open_clip's `--lock-text-freeze-layer-norm` is off by default) leaves the LayerNorm/RMSNorm weights of
    locked parts trainable; True freezes them with the rest.

    Built inside a `torch.device("meta")` context (the factory does this when a checkpoint will supply every
    weight), the Hugging Face model is built on the CPU from its config and pretrained weights are not
    fetched: its non-persistent buffers (position ids, sinusoidal tables) are not in checkpoints.
    """

    def __init__(self, cfg: HFTextConfig, *, embed_dim: int):
        super().__init__()
        self.pooler_type = HF_POOLER_ALIASES.get(cfg.pooler_type, cfg.pooler_type)
        hf_config = _hf_config(cfg)
        self.hf_config = hf_config
        # as open_clip's HFTextEncoder: the positions the transformer has (514 for XLM-R), not the tokenizer's
        # length (the config's context_length, what get_tokenizer pads to)
        self.context_length = getattr(hf_config, "max_position_embeddings", 0)
        self.vocab_size = getattr(hf_config, "vocab_size", None)
        self.pad_token_id = hf_config.pad_token_id
        if self.pad_token_id is None:
            raise ValueError(f"{hf_config.model_type} config has no pad_token_id; set it through model_kwargs")
        on_meta = torch.empty(0).is_meta
        if on_meta and cfg.pretrained:
            log.info("building %s from its config: the checkpoint being loaded supplies its weights", cfg.model_name)
        with torch.device("cpu") if on_meta else contextlib.nullcontext():
            self.transformer = _build_transformer(
                cfg,
                hf_config,
                load_weights=cfg.pretrained and not on_meta,
                pooling_layer=self.pooler_type in ("cls", "pooler_output"),
            )
        has_pooler = getattr(self.transformer, "pooler", None) is not None
        if self.pooler_type == "pooler_output" and not has_pooler:
            raise ValueError(
                f"pooler_type 'pooler_output' but {type(self.transformer).__name__} has no pooling layer; "
                "use 'cls_last_hidden_state' (first token) or 'mean'"
            )
        width = hf_config.hidden_size
        self.proj = build_projection(cfg, width, embed_dim)
        self.output_dim = width if cfg.proj_type == "none" else embed_dim

    def lock_groups(self):
        blocks = [params_of(block) for block in _find_blocks(self.transformer)]
        children = dict(self.transformer.named_children())
        head = params_of(*(children[name] for name in _HEAD_CHILDREN if name in children))
        grouped = {id(p) for p in head} | {id(p) for block in blocks for p in block}
        stem = [p for p in self.transformer.parameters() if id(p) not in grouped]
        return stem, blocks, head + params_of(self.proj)

    def lock(self, unlocked_layers: int = 0, *, freeze_norm_stats: bool = False) -> None:
        super().lock(unlocked_layers, freeze_norm_stats=freeze_norm_stats)
        for p in self.proj.parameters():
            p.requires_grad = True
        if not freeze_norm_stats:
            for module in self.transformer.modules():
                if _is_norm(module):
                    for p in module.parameters(recurse=False):
                        p.requires_grad = True

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        model = self.transformer
        if not getattr(model, "supports_gradient_checkpointing", False):
            if enable:
                raise self.no_grad_checkpointing(f"transformers' {type(model).__name__} does not support it")
            return
        new_api = hasattr(model, "activation_checkpointing_enable")  # newer transformers renamed the methods
        if not enable:
            (model.activation_checkpointing_disable if new_api else model.gradient_checkpointing_disable)()
            return
        kwargs = {"use_reentrant": False}  # gradients reach unlocked layers even when the embeddings are frozen
        if new_api:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def pool(self, out: Any, mask: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, width) hidden states -> (batch, width); mean and max see real tokens only."""
        hidden = out.last_hidden_state  # (batch, tokens, width)
        keep = mask.unsqueeze(-1)  # (batch, tokens, 1)
        if self.pooler_type == "mean":
            return hidden.masked_fill(~keep, 0.0).sum(dim=1) / keep.sum(dim=1)
        if self.pooler_type == "max":
            return hidden.masked_fill(~keep, -torch.inf).amax(dim=1)
        pooler_output = getattr(out, "pooler_output", None)
        if self.pooler_type in ("cls", "pooler_output") and pooler_output is not None:
            return pooler_output
        return hidden[:, 0]

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        mask = text != self.pad_token_id  # (batch, tokens)
        positions = torch.arange(1, text.shape[1] + 1, device=text.device)  # (tokens,)
        needed = (mask * positions).amax(dim=1) if text.shape[0] else positions[:0]  # (batch,) after the last real
        return run_groups(self.length_groups(needed, text.shape[1]), self._encode, text, mask)

    def _encode(self, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.transformer(input_ids=text, attention_mask=mask.long())
        return self.proj(self.pool(out, mask))  # (batch, output_dim)
