"""Translate open_clip's model-config schema (``vision_cfg``/``text_cfg``) into ours, and back
(`to_open_clip_config`).

open_clip infers the tower type from the shape of fields (``layers`` as a list means ModifiedResNet,
``timm_model_name`` means timm); here that inference happens once, at the boundary, and our configs carry an
explicit ``type``. Features we do not implement fail with the file and key named instead of being ignored.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from .constants import HF_POOLER_ALIASES, INIT_LOGIT_SCALE

if TYPE_CHECKING:  # config.py reads open_clip's schema through this module: the way back tells towers apart by `type`
    from .config import HFTextConfig, ModelConfig, TowerConfig

# open_clip keys that are accepted only while they hold their "feature off" value
_OFF_VALUES: dict[str, tuple] = {
    "output_tokens": (False,),
    "block_type": (None, "default"),
    "qk_norm": (False,),
    "scaled_cosine_attn": (False,),
    "scale_heads": (False,),
    "scale_attn_inner": (False,),
    "scale_attn": (False,),
    "scale_fc": (False,),
    "pos_embed_type": ("learnable",),
    "embed_cls": (False,),
    "nonscalar_logit_scale": (False,),
    "custom_text": (False, True),  # one CLIP class serves both open_clip layouts
    "tokenizer_mode": (None,),
}
_PREPROCESS_KEYS = {
    "image_mean": "mean",
    "image_std": "std",
    "interpolation": "interpolation",
    "resize_mode": "resize_mode",
}
_VIT_KEYS = frozenset(
    """
    image_size patch_size width layers head_width mlp_ratio ls_init_value patch_dropout no_ln_pre pool_type
    final_ln_after_pool attentional_pool attn_pooler_queries attn_pooler_heads
    """.split()
)
_TIMM_KEYS = {
    "timm_model_name": "model_name",
    "timm_model_pretrained": "pretrained",
    "timm_pool": "pool",
    "timm_proj": "proj",
    "timm_proj_bias": "proj_bias",
    "timm_drop": "drop",
    "timm_drop_path": "drop_path",
    "image_size": "image_size",
    "patch_dropout": "patch_dropout",
}
_TEXT_KEYS = frozenset(
    """
    context_length vocab_size width heads layers mlp_ratio ls_init_value pad_id eos_id pool_type proj_bias
    proj_type
    """.split()
)


def _unsupported(source: str, where: str, key: str, value: Any) -> ValueError:
    return ValueError(f"{source}: {where}.{key}={value!r} is an open_clip feature open_mclip does not support")


def _norm_and_act(cfg: dict, out: dict, *, quick_gelu: bool, source: str, where: str) -> None:
    """Map quick_gelu / act_kwargs / norm_kwargs onto our `act` and `norm_eps` fields."""
    out["act"] = "quick_gelu" if quick_gelu else "gelu"
    if cfg.get("act_kwargs"):
        raise _unsupported(source, where, "act_kwargs", cfg["act_kwargs"])
    norm_kwargs = dict(cfg.get("norm_kwargs") or {})
    if "eps" in norm_kwargs:
        out["norm_eps"] = float(norm_kwargs.pop("eps"))
    if norm_kwargs:
        raise _unsupported(source, where, "norm_kwargs", norm_kwargs)


def _take_off_values(cfg: dict, source: str, where: str) -> dict:
    """Drop keys holding their feature-off value; raise on those that turn an unsupported feature on."""
    rest = {}
    for key, value in cfg.items():
        if key in _OFF_VALUES:
            if value not in _OFF_VALUES[key]:
                raise _unsupported(source, where, key, value)
        else:
            rest[key] = value
    return rest


def _vision(cfg: dict, *, quick_gelu: bool, preprocess: dict, source: str) -> dict:
    cfg = _take_off_values(cfg, source, "vision_cfg")
    for key, ours in _PREPROCESS_KEYS.items():
        if key in cfg:
            preprocess[ours] = cfg.pop(key)
    if cfg.get("timm_model_name"):
        out = {"type": "timm"}
        keys = _TIMM_KEYS
        cfg = {k: v for k, v in cfg.items() if k not in ("layers", "width", "patch_size", "head_width")}
    elif isinstance(cfg.get("layers"), (list, tuple)):
        out = {"type": "modified_resnet"}
        keys = {"image_size": "image_size", "layers": "layers", "width": "width", "head_width": "head_width"}
        cfg = {k: v for k, v in cfg.items() if not (k == "patch_size" and v is None)}
    else:
        out = {"type": "vit"}
        keys = {k: k for k in _VIT_KEYS}
        _norm_and_act(cfg, out, quick_gelu=quick_gelu, source=source, where="vision_cfg")
        cfg = {k: v for k, v in cfg.items() if k not in ("act_kwargs", "norm_kwargs")}
    cfg = {k: v for k, v in cfg.items() if not k.startswith("timm_") or out["type"] == "timm"}
    for key, value in cfg.items():
        if key not in keys:
            raise _unsupported(source, "vision_cfg", key, value)
        out[keys[key]] = value
    return out


# text_cfg keys that open_clip's HFTextEncoder ignores (its sizes come from the Hugging Face config)
_HF_IGNORED_KEYS = frozenset(
    """
    vocab_size width heads layers mlp_ratio ls_init_value pad_id eos_id pool_type proj_bias proj_type
    no_causal_mask act_kwargs norm_kwargs
    """.split()
)
_HF_KEYS = {
    "hf_model_name": "model_name",
    "hf_model_pretrained": "pretrained",
    "hf_proj_type": "proj_type",
    "hf_pooler_type": "pooler_type",
    "hf_tokenizer_name": "tokenizer",
    "tokenizer_kwargs": "tokenizer_kwargs",
    "context_length": "context_length",
}


def _hf_text(cfg: dict, *, source: str) -> dict:
    """An open_clip HFTextEncoder text_cfg as our "hf" tower (open_clip's defaults: mlp head, mean pooling)."""
    out: dict[str, Any] = {"type": "hf", "pretrained": True, "proj_type": "mlp", "pooler_type": "mean_pooler"}
    for key, value in cfg.items():
        if key in _HF_KEYS:
            out[_HF_KEYS[key]] = "none" if key == "hf_proj_type" and value is None else value
        elif key not in _HF_IGNORED_KEYS:
            raise _unsupported(source, "text_cfg", key, value)
    if not out.get("tokenizer_kwargs"):
        out.pop("tokenizer_kwargs", None)
    return out


def _text(cfg: dict, *, quick_gelu: bool, source: str) -> dict:
    cfg = _take_off_values(cfg, source, "text_cfg")
    cfg.pop("final_ln_after_pool", None)  # declared by open_clip's text config but never used by its text tower
    if cfg.get("hf_model_name"):
        return _hf_text(cfg, source=source)
    out: dict[str, Any] = {"type": "transformer"}
    _norm_and_act(cfg, out, quick_gelu=quick_gelu, source=source, where="text_cfg")
    if cfg.pop("no_causal_mask", False):
        out["causal"] = False
    if cfg.get("hf_tokenizer_name"):
        out["tokenizer"] = cfg["hf_tokenizer_name"]
    if cfg.get("tokenizer_kwargs"):
        out["tokenizer_kwargs"] = dict(cfg["tokenizer_kwargs"])
    ignored = "act_kwargs norm_kwargs hf_tokenizer_name tokenizer_kwargs hf_model_pretrained hf_proj_type".split()
    ignored += ["hf_pooler_type", "hf_model_name"]
    for key, value in cfg.items():
        if key in ignored:
            continue
        if key not in _TEXT_KEYS:
            raise _unsupported(source, "text_cfg", key, value)
        out[key] = value
    return out


def convert_open_clip_config(data: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Return our-schema dict for an open_clip config dict; raise ValueError naming `source` and the key."""
    custom_text = data.get("custom_text", False)  # open_clip's model class: kept so the config travels back
    data = _take_off_values(dict(data), source, "config")
    quick_gelu = bool(data.pop("quick_gelu", False))
    if "multimodal_cfg" in data:
        raise _unsupported(source, "config", "multimodal_cfg", "(CoCa)")
    preprocess = dict(data.pop("preprocess_cfg", {}) or {})
    out: dict[str, Any] = {
        "embed_dim": data.pop("embed_dim"),
        "vision": _vision(dict(data.pop("vision_cfg")), quick_gelu=quick_gelu, preprocess=preprocess, source=source),
        "text": _text(dict(data.pop("text_cfg")), quick_gelu=quick_gelu, source=source),
    }
    for key in ("init_logit_scale", "init_logit_bias"):
        if key in data:
            out[key] = data.pop(key)
    if data:
        key = next(iter(data))
        raise _unsupported(source, "config", key, data[key])
    if preprocess:
        out["preprocess"] = preprocess
    if out["text"]["type"] != "hf":  # open_clip builds every Hugging Face text tower as CustomTextCLIP
        out["custom_text"] = custom_text  # ModelConfig keeps it only where it differs from open_clip's usual class
    return out


# --------------------------------------------------------------------------------- ours -> open_clip's schema

_TIMM_FIELDS = {ours: theirs for theirs, ours in _TIMM_KEYS.items()}  # our timm field -> open_clip's vision_cfg key
_HF_POOLER_NAMES = {ours: theirs for theirs, ours in HF_POOLER_ALIASES.items()}  # "mean" -> "mean_pooler"


def _inexpressible(where: str, detail: str) -> ValueError:
    return ValueError(f"{where}: {detail}; open_clip's config schema cannot express this")


def _quick_gelu(cfg: ModelConfig) -> bool:
    """open_clip's one `quick_gelu` flag from our towers' `act` (towers without an activation choice don't count)."""
    acts = {name: tower.act for name, tower in (("vision", cfg.vision), ("text", cfg.text)) if hasattr(tower, "act")}
    if len(set(acts.values())) > 1:
        raise _inexpressible("act", f"the towers use different activations {acts}; one quick_gelu flag serves both")
    return "quick_gelu" in acts.values()


def _move_norm_eps(fields: dict[str, Any]) -> None:
    if "norm_eps" in fields:
        fields["norm_kwargs"] = {"eps": fields.pop("norm_eps")}


def _vit_fields(fields: dict[str, Any]) -> dict[str, Any]:
    _move_norm_eps(fields)
    return fields


# our vision tower type -> open_clip's vision_cfg from our fields (without `type` and `act`)
_VISION_TO_OPEN_CLIP = {
    "vit": _vit_fields,
    "timm": lambda fields: {_TIMM_FIELDS[key]: value for key, value in fields.items()},
    "modified_resnet": lambda fields: {**fields, "patch_size": None},  # open_clip's JSON files say patch_size null
}


def _vision_to_open_clip(vision: TowerConfig) -> dict[str, Any]:
    """open_clip's vision_cfg; `to_dict` leaves out our defaults, which equal open_clip's."""
    fields = vision.to_dict()
    kind = fields.pop("type")
    fields.pop("act", None)  # the model-level quick_gelu flag
    return _VISION_TO_OPEN_CLIP[kind](fields)


def _transformer_text_to_open_clip(fields: dict[str, Any]) -> dict[str, Any]:
    fields.pop("type")
    fields.pop("act", None)  # the model-level quick_gelu flag
    if not fields.pop("causal", True):
        fields["no_causal_mask"] = True
    tokenizer = fields.pop("tokenizer", "clip")
    if tokenizer != "clip":
        fields["hf_tokenizer_name"] = tokenizer
    _move_norm_eps(fields)
    return fields


def _hf_text_to_open_clip(text: HFTextConfig) -> dict[str, Any]:
    """open_clip's HFTextEncoder text_cfg; our options it lacks raise ValueError naming them."""
    where = "text (hf)"
    if text.model_type:
        raise _inexpressible(
            where,
            f"model_type={text.model_type!r} builds the Hugging Face model from a config without a name or folder, "
            "and open_clip needs hf_model_name (save the config with transformers' save_pretrained and set "
            "model_name to that folder)",
        )
    if text.model_kwargs:
        raise _inexpressible(where, f"model_kwargs={text.model_kwargs!r} overrides the Hugging Face config")
    if text.proj_type == "residual_mlp":
        raise _inexpressible(where, f"proj_type 'residual_mlp' (proj_layers={text.proj_layers}) is not open_clip's")
    if text.proj_bias:
        raise _inexpressible(where, "proj_bias=True: open_clip's Hugging Face projections have no bias")
    if text.pooler_type not in _HF_POOLER_NAMES:
        raise _inexpressible(where, f"pooler_type {text.pooler_type!r} has no open_clip pooler")
    out: dict[str, Any] = {
        "hf_model_name": text.model_name,
        "hf_tokenizer_name": text.tokenizer_name,  # open_clip's get_tokenizer needs it named (empty: CLIP BPE)
        "hf_proj_type": None if text.proj_type == "none" else text.proj_type,
        "hf_pooler_type": _HF_POOLER_NAMES[text.pooler_type],
        "context_length": text.context_length,
    }
    if not text.pretrained:
        out["hf_model_pretrained"] = False
    if text.tokenizer_kwargs:
        out["tokenizer_kwargs"] = dict(text.tokenizer_kwargs)
    return out


# our text tower type -> open_clip's text_cfg
_TEXT_TO_OPEN_CLIP = {
    "hf": _hf_text_to_open_clip,
    "transformer": lambda text: _transformer_text_to_open_clip(text.to_dict()),
}


def to_open_clip_config(cfg: ModelConfig) -> dict[str, Any]:
    """open_clip's model config dict (its `model_configs/*.json` schema) for `cfg`.

    `open_clip.create_model` builds the same architecture from it (the same state-dict keys and shapes), and
    `ModelConfig.from_dict` reads it back to `cfg`; the one normalisation is that a Hugging Face text tower's default
    tokenizer (empty `tokenizer`: its `model_name`) is written out, as open_clip needs it named. `cfg.preprocess`
    is not part of open_clip's model config: it travels as the `preprocess_cfg` of an `open_clip_config.json`
    (`open_mclip.push_to_hf_hub.save_pretrained`). Options open_clip lacks raise ValueError naming them.
    """
    out: dict[str, Any] = {"embed_dim": cfg.embed_dim}
    if _quick_gelu(cfg):
        out["quick_gelu"] = True
    if cfg.init_logit_scale != INIT_LOGIT_SCALE:
        out["init_logit_scale"] = cfg.init_logit_scale
    if cfg.init_logit_bias is not None:
        out["init_logit_bias"] = cfg.init_logit_bias
    if cfg.open_clip_custom_text:
        out["custom_text"] = True
    out["vision_cfg"] = _vision_to_open_clip(cfg.vision)
    out["text_cfg"] = _TEXT_TO_OPEN_CLIP[cfg.text.type](cfg.text)
    return copy.deepcopy(out)  # nothing shared with `cfg` (tokenizer_kwargs are dicts)


def open_clip_layout(model_cfg: dict[str, Any]) -> str:
    """The state-dict layout open_clip builds from its model config: "custom_text" (CustomTextCLIP) or "clip"."""
    hf_text = bool((model_cfg.get("text_cfg") or {}).get("hf_model_name"))
    return "custom_text" if model_cfg.get("custom_text") or hf_text else "clip"
