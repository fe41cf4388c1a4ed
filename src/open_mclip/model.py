"""The two-tower CLIP model: one class for every image/text tower combination, with the attributes and helper
functions that code written for open_clip's `open_clip.model` reads (`model.transformer`, `get_cast_dtype`, ...)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import open_clip_lock
from .config import ModelConfig
from .constants import INIT_LOGIT_SCALE
from .convert import config_from_openai_state_dict, from_open_clip, load_state_dict_strict
from .open_clip_cfg import CLIPTextCfg, CLIPVisionCfg
from .precision import Precision, convert_weights_to_lp
from .towers import TextTransformer, Tower, build_tower
from .transform import PreprocessConfig


def _open_clip_config(embed_dim: int, vision_cfg: Any, text_cfg: Any, **top: Any) -> ModelConfig:
    """open_clip's constructor arguments (config dataclasses or dicts in its schema) as our typed config."""
    towers = {}
    for key, value in (("vision_cfg", vision_cfg), ("text_cfg", text_cfg)):
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if not isinstance(value, dict):
            raise TypeError(f"{key} must be a CLIPVisionCfg/CLIPTextCfg or a dict, got {type(value).__name__}")
        towers[key] = {k: v for k, v in value.items() if v is not None}
    data = {"embed_dim": embed_dim, **towers, **top}
    return ModelConfig.from_open_clip_dict(data, source="CLIP(embed_dim, vision_cfg, text_cfg, ...)")


_OPEN_CLIP_PREPROCESS_KEYS = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")


class CLIP(nn.Module):
    """Image tower `visual`, text tower `text`, learnable `logit_scale` and optional `logit_bias` (SigLIP).

    Built from our typed config, `CLIP(model_config("ViT-B-32"))`, or from open_clip's arguments,
    `CLIP(512, CLIPVisionCfg(...), CLIPTextCfg(...), quick_gelu=True)`. `cast_dtype` is accepted and changes
    nothing: our LayerNorm computes in float32 whenever its weights are 16-bit, which is what open_clip's
    `cast_dtype` selects. `forward` returns what open_clip's does: `(image_features, text_features,
    logit_scale.exp())`, plus `logit_bias` when the model has one, or a dict of the same when `output_dict=True`.
    """

    def __init__(
        self,
        embed_dim: int | ModelConfig,
        vision_cfg: CLIPVisionCfg | dict | None = None,
        text_cfg: CLIPTextCfg | dict | None = None,
        quick_gelu: bool = False,
        init_logit_scale: float = INIT_LOGIT_SCALE,
        init_logit_bias: float | None = None,
        nonscalar_logit_scale: bool = False,
        cast_dtype: torch.dtype | None = None,
        output_dict: bool = False,
    ):
        super().__init__()
        if isinstance(embed_dim, ModelConfig):
            extra = (vision_cfg, text_cfg, init_logit_bias) != (None, None, None) or quick_gelu or nonscalar_logit_scale
            if extra or init_logit_scale != INIT_LOGIT_SCALE:
                raise TypeError("CLIP(ModelConfig) takes no open_clip config arguments: set them in the ModelConfig")
            cfg = embed_dim
        else:
            cfg = _open_clip_config(
                embed_dim,
                vision_cfg,
                text_cfg,
                quick_gelu=quick_gelu,
                init_logit_scale=init_logit_scale,
                init_logit_bias=init_logit_bias,
                nonscalar_logit_scale=nonscalar_logit_scale,
            )
        if cast_dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"cast_dtype={cast_dtype!r} must be None, torch.float16 or torch.bfloat16")
        self.cfg = cfg
        self.output_dict = output_dict
        self.visual: Tower = build_tower(cfg.vision, embed_dim=cfg.embed_dim)
        self.text: Tower = build_tower(cfg.text, embed_dim=cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = None
        if cfg.init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))

    # ------------------------------------------------------------------------------------ open_clip's attributes
    # open_clip's CLIP class keeps a Transformer text tower's parts at the top level; here they live in `self.text`
    # and these properties reach them (AttributeError for a Hugging Face tower, as open_clip's CustomTextCLIP).
    def _native_text(self, name: str) -> Any:
        if not isinstance(self.text, TextTransformer):
            raise AttributeError(f"{name!r}: this model's text tower is a {type(self.text).__name__}; see model.text")
        return getattr(self.text, name)

    transformer = property(lambda self: self._native_text("transformer"))
    token_embedding = property(lambda self: self._native_text("token_embedding"))
    positional_embedding = property(lambda self: self._native_text("positional_embedding"))
    ln_final = property(lambda self: self._native_text("ln_final"))
    text_projection = property(lambda self: self._native_text("text_projection"))
    text_pool_type = property(lambda self: self._native_text("pool_type"))
    text_eos_id = property(lambda self: self._native_text("eos_id"))

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """open_clip's additive causal mask, (context, context) with -inf above the diagonal (None if not causal).
        Our attention applies causality itself; this is built on request for code that reads it."""
        if not self._native_text("causal"):
            return None
        n = self.text.context_length
        return torch.full((n, n), float("-inf"), device=self.text.positional_embedding.device).triu_(1)

    @property
    def context_length(self) -> int | None:
        return getattr(self.text, "context_length", None)

    @property
    def vocab_size(self) -> int | None:
        return getattr(self.text, "vocab_size", None)

    @property
    def preprocess_cfg(self) -> PreprocessConfig | None:
        """The image preprocessing this model expects. open_clip keeps the same as a dict in
        `model.visual.preprocess_cfg` (with `image_mean`/`image_std`); that dict is the one store, read and set here."""
        data = getattr(self.visual, "preprocess_cfg", None)
        return PreprocessConfig.from_dict(dict(data), source="model.visual.preprocess_cfg") if data else None

    @preprocess_cfg.setter
    def preprocess_cfg(self, cfg: PreprocessConfig) -> None:
        # open_clip's keys always; our extra options only where they differ from the default, so the dict is
        # exactly open_clip's for a model preprocessed open_clip's way
        default = PreprocessConfig().to_dict()
        data = {k: v for k, v in cfg.to_dict().items() if k in _OPEN_CLIP_PREPROCESS_KEYS or v != default[k]}
        set_model_preprocess_cfg(self, data)

    # --------------------------------------------------------------------------------------------- computation
    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(image)  # (batch, embed_dim)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text(text)  # (batch, embed_dim)
        return F.normalize(features, dim=-1) if normalize else features

    def get_logits(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text), each scaled (and biased) similarity matrices."""
        image_features = self.encode_image(image, normalize=True)
        text_features = self.encode_text(text, normalize=True)
        logits = self.logit_scale.exp() * image_features @ text_features.T  # (images, texts)
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return logits, logits.T

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        if self.output_dict:
            out = {
                "image_features": image_features,
                "text_features": text_features,
                "logit_scale": self.logit_scale.exp(),
            }
            if self.logit_bias is not None:
                out["logit_bias"] = self.logit_bias
            return out
        if self.logit_bias is not None:
            return image_features, text_features, self.logit_scale.exp(), self.logit_bias
        return image_features, text_features, self.logit_scale.exp()

    # ------------------------------------------------------------------------------------- training controls
    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """LiT with open_clip's meaning of `unlocked_groups` for this tower type (see open_clip_lock.py); our uniform
        block counting is `model.visual.lock(unlocked_layers, freeze_norm_stats=...)`."""
        open_clip_lock.lock_image_tower(self.visual, unlocked_groups, freeze_bn_stats)

    def lock_text_tower(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the text tower as open_clip does (see open_clip_lock.py); ours is `model.text.lock(...)`."""
        open_clip_lock.lock_text_tower(self.text, unlocked_layers, freeze_layer_norm)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Full parameter names to exclude from weight decay, besides 1-d parameters (gains, biases)."""
        names = {"logit_scale", "logit_bias"}
        names |= {f"visual.{n}" for n in self.visual.no_weight_decay()}
        names |= {f"text.{n}" for n in self.text.no_weight_decay()}
        return names


CustomTextCLIP = CLIP  # open_clip's second class: one class here serves both of its layouts


class CoCa(nn.Module):
    """open_clip's CoCa (contrastive captioner), with its signature; not implemented here, so it is refused."""

    def __init__(
        self,
        embed_dim: int,
        multimodal_cfg: Any,
        text_cfg: Any,
        vision_cfg: Any,
        quick_gelu: bool = False,
        init_logit_scale: float = INIT_LOGIT_SCALE,
        init_logit_bias: float | None = None,
        nonscalar_logit_scale: bool = False,
        cast_dtype: torch.dtype | None = None,
        pad_id: int = 0,
    ):
        raise NotImplementedError("CoCa: captioning models (a multimodal text decoder) are not supported by open_mclip")


# ---------------------------------------------------------------------------------- open_clip's model helpers
def get_cast_dtype(precision: str) -> torch.dtype | None:
    """The 16-bit dtype of the `bf16`/`fp16` precisions, else None (open_clip's `get_cast_dtype`)."""
    return Precision.parse(precision).cast_dtype


def get_input_dtype(precision: str) -> torch.dtype | None:
    """The dtype images are fed in for a 16-bit precision (`bf16`, `pure_bf16`, `fp16`, `pure_fp16`), else None."""
    dtype = Precision.parse(precision).input_dtype
    return None if dtype == torch.float32 else dtype


def convert_weights_to_fp16(model: nn.Module, dtype: torch.dtype = torch.float16) -> None:
    """open_clip's older name for `convert_weights_to_lp`."""
    convert_weights_to_lp(model, dtype)


def get_model_preprocess_cfg(model: nn.Module) -> dict[str, Any]:
    """The preprocessing dict a model carries (open_clip's keys: size, mode, mean, std, interpolation, ...)."""
    module = getattr(model, "visual", model)
    cfg = getattr(module, "preprocess_cfg", None)
    if cfg:
        return dict(cfg)
    legacy = {"size": getattr(module, "image_size", None), "mean": getattr(module, "image_mean", None)}
    legacy["std"] = getattr(module, "image_std", None)
    return {k: v for k, v in legacy.items() if v is not None}


def set_model_preprocess_cfg(model: nn.Module, preprocess_cfg: dict[str, Any]) -> None:
    """Attach a preprocessing dict where open_clip keeps it: `visual.preprocess_cfg`, `image_mean`, `image_std`."""
    module = getattr(model, "visual", model)
    module.image_mean = preprocess_cfg["mean"]
    module.image_std = preprocess_cfg["std"]
    module.preprocess_cfg = dict(preprocess_cfg)


def get_model_tokenize_cfg(model: nn.Module) -> dict[str, int]:
    """{"context_length", "vocab_size"} of a model's text tower, where it declares them."""
    module = getattr(model, "text", model)
    cfg = {"context_length": getattr(module, "context_length", None), "vocab_size": getattr(module, "vocab_size", None)}
    return {k: v for k, v in cfg.items() if v is not None}


_CPU = torch.device("cpu")


def trace_model(model: CLIP, batch_size: int = 256, device: torch.device = _CPU):
    """A TorchScript trace of `forward`, `encode_image` and `encode_text` on constant inputs, as open_clip's."""
    model.eval()
    size = model.visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.ones((batch_size, 3, height, width), device=device)
    text = torch.zeros((batch_size, model.context_length), dtype=torch.int, device=device)
    inputs = {"forward": (images, text), "encode_text": (text,), "encode_image": (images,)}
    return torch.jit.trace_module(model, inputs=inputs)


def build_model_from_openai_state_dict(
    state_dict: dict[str, torch.Tensor], quick_gelu: bool = True, cast_dtype: torch.dtype | None = torch.float16
) -> CLIP:
    """A model whose architecture is read off an OpenAI-layout state dict, loaded strictly, matrix weights in
    float16 and in eval mode, as open_clip's (`cast_dtype` is accepted for its signature, see `CLIP`)."""
    model = CLIP(config_from_openai_state_dict(state_dict, quick_gelu=quick_gelu), cast_dtype=cast_dtype)
    load_state_dict_strict(model, from_open_clip(state_dict), source="the OpenAI state dict")
    convert_weights_to_lp(model, torch.float16)
    return model.eval()
