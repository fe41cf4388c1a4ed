"""open_clip's config dataclasses, `CLIPVisionCfg` and `CLIPTextCfg`: the same fields and defaults as open_clip 3.3,
so code that builds `CLIP(embed_dim, vision_cfg, text_cfg)` runs here. They are open_clip's schema, not ours: `CLIP`
translates them (with `open_clip_schema`) into our typed configs, and a field that turns on a feature we do not
implement is refused there with its name.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import DEFAULT_CONTEXT_LENGTH


@dataclass
class CLIPVisionCfg:
    """An image tower in open_clip's schema: ViT fields, `layers` as 4 stage depths for ModifiedResNet, `timm_*`."""

    layers: tuple[int, int, int, int] | int = 12
    width: int = 768
    head_width: int = 64
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_size: tuple[int, int] | int = 224
    ls_init_value: float | None = None
    patch_dropout: float = 0.0
    attentional_pool: bool = False
    attn_pooler_queries: int = 256
    attn_pooler_heads: int = 8
    no_ln_pre: bool = False
    pos_embed_type: str = "learnable"
    final_ln_after_pool: bool = False
    pool_type: str = "tok"
    output_tokens: bool = False
    act_kwargs: dict | None = None
    norm_kwargs: dict | None = None
    block_type: str | None = None
    qk_norm: bool = False
    scaled_cosine_attn: bool = False
    scale_heads: bool = False
    scale_attn_inner: bool = False
    scale_attn: bool = False
    scale_fc: bool = False
    timm_model_name: str | None = None
    timm_model_pretrained: bool = False
    timm_pool: str = "avg"
    timm_proj: str = "linear"
    timm_proj_bias: bool = False
    timm_drop: float = 0.0
    timm_drop_path: float | None = None


@dataclass
class CLIPTextCfg:
    """A text tower in open_clip's schema: the causal Transformer's fields, or `hf_*` for a Hugging Face encoder."""

    context_length: int = DEFAULT_CONTEXT_LENGTH
    vocab_size: int = 49408
    hf_tokenizer_name: str | None = None
    tokenizer_mode: str | None = None
    tokenizer_kwargs: dict | None = None
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    embed_cls: bool = False
    pad_id: int = 0
    eos_id: int = 2
    no_causal_mask: bool = False
    final_ln_after_pool: bool = False
    pool_type: str = "argmax"
    proj_bias: bool = False
    proj_type: str = "linear"
    output_tokens: bool = False
    act_kwargs: dict | None = None
    norm_kwargs: dict | None = None
    block_type: str | None = None
    qk_norm: bool = False
    scaled_cosine_attn: bool = False
    scale_heads: bool = False
    scale_attn_inner: bool = False
    scale_attn: bool = False
    scale_fc: bool = False
    hf_model_name: str | None = None
    hf_model_pretrained: bool = True
    hf_proj_type: str = "mlp"
    hf_pooler_type: str = "mean_pooler"
