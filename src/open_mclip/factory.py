"""Entry points open_clip users know: `create_model`, `create_model_and_transforms`, `get_tokenizer`.

Model names are built-in architectures (`ViT-B-32`), `hf-hub:org/repo` or `local-dir:/path` (a folder with
`open_clip_config.json` and weights). `pretrained` is a registry tag (`laion2b_s34b_b79k`) or a file path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from .config import HFTextConfig, ModelConfig, TimmConfig
from .constants import HF_HUB_PREFIX, LOCAL_DIR_PREFIX
from .convert import load_checkpoint
from .model import CLIP
from .precision import Precision
from .pretrained import resolve_hf_hub, resolve_pretrained
from .registry import get_model_config
from .tokenizer import ClipTokenizer, HFTokenizer
from .transform import AugmentationConfig, PreprocessConfig, image_transform

log = logging.getLogger(__name__)

# weight files looked for in a local-dir folder, most preferred first
_LOCAL_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)


@dataclasses.dataclass
class _Resolved:
    """What a model name and `pretrained` resolve to before anything is built."""

    cfg: ModelConfig
    weights: str | None
    preprocess: dict[str, Any]  # PreprocessConfig fields from the hub config or pretrained entry
    quick_gelu: bool = False  # the pretrained weights were trained with QuickGELU


def _read_local_dir(folder: str) -> _Resolved:
    path = Path(folder)
    config_path = path / "open_clip_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"local-dir:{folder} has no open_clip_config.json")
    data = json.loads(config_path.read_text(encoding="utf-8"))
    if "model_cfg" not in data:
        raise ValueError(f"{config_path} has no 'model_cfg' entry")
    weights = next((str(path / n) for n in _LOCAL_WEIGHTS if (path / n).is_file()), None)
    cfg = ModelConfig.from_dict(data["model_cfg"], source=str(config_path))
    return _Resolved(cfg, weights, dict(data.get("preprocess_cfg", {})))


def _resolve(model_name: str, pretrained: str | None, *, cache_dir: str | None) -> _Resolved:
    if model_name.startswith(HF_HUB_PREFIX):
        if pretrained:
            log.warning("ignoring pretrained=%r: %s names its own weights", pretrained, model_name)
        data, weights = resolve_hf_hub(model_name, cache_dir=cache_dir)
        cfg = ModelConfig.from_dict(data["model_cfg"], source=model_name)
        return _Resolved(cfg, weights, dict(data.get("preprocess_cfg", {})))
    if model_name.startswith(LOCAL_DIR_PREFIX):
        return _read_local_dir(model_name[len(LOCAL_DIR_PREFIX) :])
    name = model_name.replace("/", "-")  # open_clip accepts "ViT-B/32"
    cfg = get_model_config(name)
    if not pretrained:
        return _Resolved(cfg, None, {})
    weights, entry = resolve_pretrained(name, pretrained, cache_dir=cache_dir)
    fields = {f.name for f in dataclasses.fields(PreprocessConfig)}
    return _Resolved(cfg, weights, {k: v for k, v in entry.items() if k in fields}, bool(entry.get("quick_gelu")))


def _apply_overrides(
    cfg: ModelConfig,
    *,
    quick_gelu: bool,
    patch_dropout: float | None,
    image_size: int | tuple[int, int] | None,
    context_length: int | None,
) -> ModelConfig:
    vision: dict[str, Any] = {}
    text: dict[str, Any] = {}
    if quick_gelu:
        for changes, tower in ((vision, cfg.vision), (text, cfg.text)):
            if hasattr(tower, "act"):
                changes["act"] = "quick_gelu"
    if patch_dropout is not None:
        vision["patch_dropout"] = patch_dropout
    if image_size is not None:
        vision["image_size"] = image_size
    if context_length is not None:
        text["context_length"] = context_length
    return cfg.replace(vision=vision, text=text)


def create_model(
    model_name: str,
    pretrained: str | None = None,
    *,
    load_weights: bool = True,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    force_quick_gelu: bool = False,
    force_patch_dropout: float | None = None,
    force_image_size: int | tuple[int, int] | None = None,
    force_context_length: int | None = None,
    force_preprocess_cfg: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    output_dict: bool | None = None,
    require_pretrained: bool = False,
) -> CLIP:
    """Build a CLIP model by name, load its weights if any, and attach its `preprocess_cfg`."""
    mode = Precision.parse(precision)
    resolved = _resolve(model_name, pretrained, cache_dir=cache_dir)
    if resolved.quick_gelu and not force_quick_gelu:
        log.info("pretrained weights %r were trained with QuickGELU; using it", pretrained)
    cfg = _apply_overrides(
        resolved.cfg,
        quick_gelu=force_quick_gelu or resolved.quick_gelu,
        patch_dropout=force_patch_dropout,
        image_size=force_image_size,
        context_length=force_context_length,
    )
    weights = resolved.weights if load_weights else None
    # weights about to be loaded make random initialisation wasted work: build on the meta device instead
    # (timm trunks compute Python values from tensors while building, so they are built normally)
    on_meta = weights is not None and not isinstance(cfg.vision, TimmConfig)
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        model = CLIP(cfg, output_dict=bool(output_dict))
    if weights is not None:
        load_checkpoint(model, weights, assign=on_meta)
    elif require_pretrained:
        raise ValueError(f"pretrained weights are required but none were found for {model_name!r} ({pretrained!r})")
    mode.cast_model(model)
    model.to(device)
    preprocess = PreprocessConfig().merged(**{**cfg.preprocess, **resolved.preprocess})
    preprocess = preprocess.merged(size=model.visual.image_size, **(force_preprocess_cfg or {}))
    model.preprocess_cfg = preprocess
    return model


def create_model_and_transforms(
    model_name: str,
    pretrained: str | None = None,
    *,
    image_mean: tuple[float, ...] | None = None,
    image_std: tuple[float, ...] | None = None,
    image_interpolation: str | None = None,
    image_resize_mode: str | None = None,
    aug_cfg: AugmentationConfig | dict[str, Any] | None = None,
    **model_options: Any,
):
    """(model, train transform, eval transform); `model_options` are `create_model`'s keyword options."""
    overrides = dict(model_options.pop("force_preprocess_cfg", None) or {})
    for key, value in (
        ("mean", image_mean),
        ("std", image_std),
        ("interpolation", image_interpolation),
        ("resize_mode", image_resize_mode),
    ):
        if value is not None:
            overrides[key] = value
    model = create_model(model_name, pretrained, force_preprocess_cfg=overrides, **model_options)
    if isinstance(aug_cfg, dict):
        aug_cfg = AugmentationConfig.from_dict(aug_cfg, source="aug_cfg")
    train = image_transform(model.preprocess_cfg, is_train=True, aug_cfg=aug_cfg)
    val = image_transform(model.preprocess_cfg, is_train=False)
    return model, train, val


def create_model_from_pretrained(
    model_name: str, pretrained: str | None = None, *, return_transform: bool = True, **model_options: Any
):
    """A pretrained model (weights required) and, by default, its eval transform."""
    model = create_model(model_name, pretrained, require_pretrained=True, **model_options)
    if not return_transform:
        return model
    return model, image_transform(model.preprocess_cfg, is_train=False)


def get_tokenizer(
    model_name: str = "ViT-B-32",
    *,
    context_length: int | None = None,
    cache_dir: str | None = None,
    **tokenizer_kwargs: Any,
) -> ClipTokenizer | HFTokenizer:
    """The tokenizer a model's text tower expects (CLIP BPE, or the Hugging Face tokenizer it names).

    `tokenizer_kwargs` override the config's `tokenizer_kwargs`, as in open_clip; e.g. a Hugging Face tokenizer
    read offline from a lone file: `get_tokenizer("mclip-tiny-xlmr", tokenizer_file="/path/tokenizer.json")`.
    """
    cfg = _resolve(model_name, None, cache_dir=cache_dir).cfg.text
    context_length = context_length or getattr(cfg, "context_length", 77)
    name = cfg.tokenizer_name if isinstance(cfg, HFTextConfig) else getattr(cfg, "tokenizer", "clip")
    kwargs = {**(getattr(cfg, "tokenizer_kwargs", {}) or {}), **tokenizer_kwargs}
    if name == "clip":
        return ClipTokenizer(context_length=context_length, **kwargs)
    return HFTokenizer(name, context_length=context_length, cache_dir=cache_dir, **kwargs)
