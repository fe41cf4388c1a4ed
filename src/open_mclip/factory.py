"""Entry points open_clip users know: `create_model`, `create_model_and_transforms`, `create_model_from_pretrained`,
`get_tokenizer`, with open_clip 3.3's parameter names, positional order and defaults.

Model names are built-in architectures (`ViT-B-32`), `hf-hub:org/repo` or `local-dir:/path` (a folder with
`open_clip_config.json` and weights). `pretrained` is a registry tag (`laion2b_s34b_b79k`) or a file path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from . import loss
from .config import HFTextConfig, ModelConfig, TimmConfig
from .constants import DEFAULT_CONTEXT_LENGTH, HF_CONFIG_NAME, HF_HUB_PREFIX, LOCAL_DIR_PREFIX
from .convert import load_checkpoint
from .model import CLIP
from .precision import Precision
from .pretrained import hf_hub_config, resolve_hf_hub, resolve_pretrained
from .registry import add_model_config, list_models, model_config
from .tokenizer import ClipTokenizer, HFTokenizer
from .transform import AugmentationConfig, PreprocessConfig, image_transform
from .weights_io import load_weights_file

log = logging.getLogger(__name__)

__all__ = [  # open_clip.factory's names, and the registry's that it re-exports
    "add_model_config",
    "create_loss",
    "create_model",
    "create_model_and_transforms",
    "create_model_from_pretrained",
    "get_model_config",
    "get_tokenizer",
    "list_models",
    "load_checkpoint",
    "HF_HUB_PREFIX",
    "LOCAL_DIR_PREFIX",
]

# weight files looked for in a local-dir folder, most preferred first (open_clip's order)
_LOCAL_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)


@dataclasses.dataclass
class _Resolved:
    """What a model name and `pretrained` resolve to before anything is built."""

    cfg: ModelConfig
    weights: str | None
    preprocess: dict[str, Any]  # PreprocessConfig fields from the hub config or pretrained entry
    quick_gelu: bool = False  # the pretrained weights were trained with QuickGELU


def _find_local_weights(folder: Path) -> str | None:
    """The weights file of a local-dir folder: open_clip's preferred names first, then any safetensors/bin/pth."""
    for name in _LOCAL_WEIGHTS:
        if (folder / name).is_file():
            return str(folder / name)
    others = sorted(p for ext in ("safetensors", "bin", "pth") for p in folder.glob(f"*.{ext}"))
    others.sort(key=lambda p: p.suffix != ".safetensors")
    if others:
        log.warning("no preferred weights file in %s; using %s of %s", folder, others[0].name, [p.name for p in others])
    return str(others[0]) if others else None


def read_local_dir(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed `open_clip_config.json` of a local-dir folder; errors name the folder or the file."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"local-dir:{folder} is not a folder")
    config_path = path / HF_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"local-dir:{folder} has no {HF_CONFIG_NAME}")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or "model_cfg" not in data:
        raise ValueError(f"{config_path} has no 'model_cfg' entry; it is not an open_clip model folder")
    return data


def _preprocess_fields(data: dict[str, Any], *, source: str) -> dict[str, Any]:
    """The PreprocessConfig fields of a folder's `preprocess_cfg`; other keys are skipped, as open_clip skips them."""
    known = {f.name for f in dataclasses.fields(PreprocessConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        log.warning("%s: skipping preprocess_cfg keys %s (not preprocessing settings here)", source, unknown)
    return {k: v for k, v in data.items() if k in known}


def _resolve(model_name: str, pretrained: str | None, *, cache_dir: str | None) -> _Resolved:
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(
            f"model_name must be an architecture name, 'hf-hub:org/repo' or 'local-dir:PATH', got {model_name!r}"
        )
    if model_name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)) and pretrained:
        log.warning("ignoring pretrained=%r: %s names its own weights", pretrained, model_name)
    if model_name.startswith(HF_HUB_PREFIX):
        data, weights = resolve_hf_hub(model_name, cache_dir=cache_dir)
        cfg = ModelConfig.from_dict(data["model_cfg"], source=model_name)
        return _Resolved(cfg, weights, _preprocess_fields(data.get("preprocess_cfg") or {}, source=model_name))
    if model_name.startswith(LOCAL_DIR_PREFIX):
        folder = model_name[len(LOCAL_DIR_PREFIX) :]
        data = read_local_dir(folder)
        cfg = ModelConfig.from_dict(data["model_cfg"], source=str(Path(folder) / HF_CONFIG_NAME))
        weights = _find_local_weights(Path(folder))
        if weights is None:
            log.warning("local-dir:%s has a config but no weights file; the model is randomly initialised", folder)
        return _Resolved(cfg, weights, _preprocess_fields(data.get("preprocess_cfg") or {}, source=model_name))
    name = model_name.replace("/", "-")  # open_clip accepts "ViT-B/32"
    cfg = model_config(name)
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


def _apply_model_kwargs(cfg: ModelConfig, model_kwargs: dict[str, Any]) -> ModelConfig:
    """open_clip's `**model_kwargs`: top-level keys of its model config (e.g. `init_logit_bias`, `text_cfg`), applied
    last, over the config in open_clip's schema; a key it has no meaning for is an error naming the key."""
    if not model_kwargs:
        return cfg
    from .open_clip_schema import to_open_clip_config

    data = to_open_clip_config(cfg)
    data.update(model_kwargs)
    new = ModelConfig.from_open_clip_dict(data, source=f"create_model(**{sorted(model_kwargs)})")
    return dataclasses.replace(new, preprocess=dict(cfg.preprocess))  # not part of open_clip's model config


def _default_tower_weights(cfg: ModelConfig, *, image: bool, text: bool) -> ModelConfig:
    """Whether timm / Hugging Face towers fetch their own pretrained weights, as open_clip decides it."""
    vision, text_changes = {}, {}
    if isinstance(cfg.vision, TimmConfig):
        vision["pretrained"] = image
    if isinstance(cfg.text, HFTextConfig) and cfg.text.model_name:  # model_type towers have no weights to fetch
        text_changes["pretrained"] = text
    return cfg.replace(vision=vision, text=text_changes)


def _load_tower_weights(tower: torch.nn.Module, path: str, *, prefix: str) -> None:
    """A tower's own weights from a file, non-strictly as open_clip loads them; keys may carry the tower's prefix
    ("visual." or "text."). A file none of whose keys fit the tower, or with a mis-shaped one, is an error naming
    the file (open_clip logs it and goes on with random weights)."""
    state = {k.removeprefix("module.").removeprefix(prefix): v for k, v in load_weights_file(path).items()}
    own = tower.state_dict()
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if shapes or not set(state) & set(own):
        found = f"mis-shaped keys {shapes[:5]}" if shapes else f"keys starting {sorted(state)[:5]}"
        raise ValueError(f"{path} has no weights for the {prefix[:-1]} tower: {found}")
    result = tower.load_state_dict(state, strict=False)
    missing, unexpected = result.missing_keys, result.unexpected_keys
    log.info("%s tower weights from %s: missing %s, unexpected %s", prefix[:-1], path, missing, unexpected)


def _check_open_clip_options(*, jit: bool, weights_only: bool) -> None:
    if jit:
        raise ValueError(
            "jit=True (TorchScript) is not supported: open_mclip models run eagerly and give the same numbers; "
            "pass jit=False (clip-retrieval: --use_jit False), or use torch.compile(model) for speed"
        )
    if not weights_only:
        raise ValueError(
            "weights_only=False is refused: it would unpickle arbitrary code from the checkpoint, and open_mclip reads "
            "every checkpoint format (OpenAI TorchScript archives included) without it; pass weights_only=True"
        )


def create_model(
    model_name: str,
    pretrained: str | None = None,
    load_weights: bool = True,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    jit: bool = False,
    force_quick_gelu: bool = False,
    force_custom_text: bool = False,
    force_patch_dropout: float | None = None,
    force_image_size: int | tuple[int, int] | None = None,
    force_preprocess_cfg: dict[str, Any] | None = None,
    force_context_length: int | None = None,
    pretrained_image: bool = False,
    pretrained_text: bool = True,
    pretrained_image_path: str | None = None,
    pretrained_text_path: str | None = None,
    cache_dir: str | None = None,
    output_dict: bool | None = None,
    require_pretrained: bool = False,
    weights_only: bool = True,
    **model_kwargs: Any,
) -> CLIP:
    """Build a CLIP model by name, load its weights if any, and attach its preprocessing configuration.

    open_clip's parameters with open_clip's meaning. `force_custom_text` is accepted and changes nothing: one model
    class serves both of open_clip's layouts. `pretrained_image`/`pretrained_text` let timm and Hugging Face towers
    fetch their own weights when no CLIP checkpoint is loaded. `pretrained_image_path`/`pretrained_text_path` load
    a tower's weights afterwards, non-strictly (missing and unexpected keys are logged). `model_kwargs` override
    top-level keys of open_clip's model config (`init_logit_bias=-10.0`, `text_cfg={...}`). Refused: `jit=True`
    and `weights_only=False` (see the messages).
    """
    _check_open_clip_options(jit=jit, weights_only=weights_only)
    mode = Precision.parse(precision)
    if "pretrained_hf" in model_kwargs:  # open_clip's old name for pretrained_text
        pretrained_text = bool(model_kwargs.pop("pretrained_hf"))
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
    cfg = _apply_model_kwargs(cfg, model_kwargs)
    weights = resolved.weights if load_weights else None
    cfg = _default_tower_weights(
        cfg,
        image=pretrained_image and pretrained_image_path is None and weights is None,
        text=pretrained_text and pretrained_text_path is None and weights is None,
    )
    # weights about to be loaded make random initialisation wasted work: build on the meta device instead
    # (timm trunks compute Python values from tensors while building, so they are built normally)
    on_meta = weights is not None and not isinstance(cfg.vision, TimmConfig)
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        model = CLIP(cfg, output_dict=bool(output_dict))
    if weights is not None:
        load_checkpoint(model, weights, assign=on_meta)
    elif require_pretrained:
        raise RuntimeError(f"pretrained weights are required but none were found for {model_name!r} ({pretrained!r})")
    if pretrained_image_path:
        _load_tower_weights(model.visual, pretrained_image_path, prefix="visual.")
    if pretrained_text_path:
        _load_tower_weights(model.text, pretrained_text_path, prefix="text.")
    mode.cast_model(model)
    model.to(device)
    preprocess = PreprocessConfig().merged(**{**cfg.preprocess, **resolved.preprocess})
    model.preprocess_cfg = preprocess.merged(size=model.visual.image_size, **(force_preprocess_cfg or {}))
    return model


def _preprocess_overrides(**values: Any) -> dict[str, Any]:
    """open_clip's image_* arguments as preprocessing overrides (None: keep the model's)."""
    return {key: value for key, value in values.items() if value is not None}


def create_model_and_transforms(
    model_name: str,
    pretrained: str | None = None,
    load_weights: bool = True,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    jit: bool = False,
    force_quick_gelu: bool = False,
    force_custom_text: bool = False,
    force_patch_dropout: float | None = None,
    force_image_size: int | tuple[int, int] | None = None,
    force_context_length: int | None = None,
    image_mean: tuple[float, ...] | None = None,
    image_std: tuple[float, ...] | None = None,
    image_interpolation: str | None = None,
    image_resize_mode: str | None = None,
    aug_cfg: AugmentationConfig | dict[str, Any] | None = None,
    pretrained_image: bool = False,
    pretrained_text: bool = True,
    pretrained_image_path: str | None = None,
    pretrained_text_path: str | None = None,
    cache_dir: str | None = None,
    output_dict: bool | None = None,
    weights_only: bool = True,
    *,
    force_preprocess_cfg: dict[str, Any] | None = None,
    **model_kwargs: Any,
):
    """(model, train transform, eval transform), as open_clip's; `force_preprocess_cfg` (ours) overrides any
    preprocessing field after the `image_*` arguments."""
    overrides = _preprocess_overrides(
        mean=image_mean, std=image_std, interpolation=image_interpolation, resize_mode=image_resize_mode
    )
    model = create_model(
        model_name,
        pretrained,
        load_weights=load_weights,
        precision=precision,
        device=device,
        jit=jit,
        force_quick_gelu=force_quick_gelu,
        force_custom_text=force_custom_text,
        force_patch_dropout=force_patch_dropout,
        force_image_size=force_image_size,
        force_preprocess_cfg={**overrides, **(force_preprocess_cfg or {})},
        force_context_length=force_context_length,
        pretrained_image=pretrained_image,
        pretrained_text=pretrained_text,
        pretrained_image_path=pretrained_image_path,
        pretrained_text_path=pretrained_text_path,
        cache_dir=cache_dir,
        output_dict=output_dict,
        weights_only=weights_only,
        **model_kwargs,
    )
    if isinstance(aug_cfg, dict):
        aug_cfg = AugmentationConfig.from_dict(aug_cfg, source="aug_cfg")
    train = image_transform(model.preprocess_cfg, is_train=True, aug_cfg=aug_cfg)
    val = image_transform(model.preprocess_cfg, is_train=False)
    return model, train, val


def create_model_from_pretrained(
    model_name: str,
    pretrained: str | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    jit: bool = False,
    force_quick_gelu: bool = False,
    force_custom_text: bool = False,
    force_image_size: int | tuple[int, int] | None = None,
    force_context_length: int | None = None,
    image_mean: tuple[float, ...] | None = None,
    image_std: tuple[float, ...] | None = None,
    image_interpolation: str | None = None,
    image_resize_mode: str | None = None,
    return_transform: bool = True,
    cache_dir: str | None = None,
    weights_only: bool = True,
    **model_kwargs: Any,
):
    """A pretrained model (weights required) and, by default, its eval transform, as open_clip's."""
    overrides = _preprocess_overrides(
        mean=image_mean, std=image_std, interpolation=image_interpolation, resize_mode=image_resize_mode
    )
    model = create_model(
        model_name,
        pretrained,
        precision=precision,
        device=device,
        jit=jit,
        force_quick_gelu=force_quick_gelu,
        force_custom_text=force_custom_text,
        force_image_size=force_image_size,
        force_preprocess_cfg=overrides,
        force_context_length=force_context_length,
        cache_dir=cache_dir,
        require_pretrained=True,
        weights_only=weights_only,
        **model_kwargs,
    )
    if not return_transform:
        return model
    return model, image_transform(model.preprocess_cfg, is_train=False)


# any of these in a local-dir: folder makes it the Hugging Face tokenizer's source (transformers' file names)
_HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model")


def get_tokenizer(
    model_name: str = "",
    context_length: int | None = None,
    cache_dir: str | None = None,
    **kwargs: Any,
) -> ClipTokenizer | HFTokenizer:
    """The tokenizer a model's text tower expects (CLIP BPE, or the Hugging Face tokenizer it names).

    No name gives CLIP's BPE tokenizer, as open_clip. `kwargs` override the config's `tokenizer_kwargs`; e.g. a
    Hugging Face tokenizer read offline from a lone file:
    `get_tokenizer("mclip-tiny-xlmr", tokenizer_file="/path/tokenizer.json")`. For a `local-dir:` model with a
    Hugging Face tokenizer, the tokenizer files are read from that folder, as open_clip does; a folder without
    tokenizer files (a config and weights only) uses the tokenizer its config names, where open_clip fails.
    """
    if not model_name:
        return ClipTokenizer(context_length=context_length or DEFAULT_CONTEXT_LENGTH, **kwargs)
    cfg = _resolve(model_name, None, cache_dir=cache_dir).cfg.text
    context_length = context_length or getattr(cfg, "context_length", DEFAULT_CONTEXT_LENGTH)
    name = cfg.tokenizer_name if isinstance(cfg, HFTextConfig) else getattr(cfg, "tokenizer", "clip")
    kwargs = {**(getattr(cfg, "tokenizer_kwargs", {}) or {}), **kwargs}
    if name == "clip":
        return ClipTokenizer(context_length=context_length, **kwargs)
    folder = Path(model_name[len(LOCAL_DIR_PREFIX) :]) if model_name.startswith(LOCAL_DIR_PREFIX) else None
    if folder is not None and any((folder / file).is_file() for file in _HF_TOKENIZER_FILES):
        name = str(folder)
    return HFTokenizer(name, context_length=context_length, cache_dir=cache_dir, **kwargs)


def get_model_config(model_name: str) -> dict[str, Any] | None:
    """open_clip's model config dict (its schema) of a built-in, `local-dir:` or `hf-hub:` model; None for an unknown
    name, as open_clip. Our typed `ModelConfig` of a built-in name is `open_mclip.model_config(name)`."""
    if model_name.startswith(LOCAL_DIR_PREFIX):
        data = read_local_dir(model_name[len(LOCAL_DIR_PREFIX) :])
        return data["model_cfg"]
    if model_name.startswith(HF_HUB_PREFIX):
        return hf_hub_config(model_name)["model_cfg"]
    from .open_clip_schema import to_open_clip_config

    try:
        cfg = model_config(model_name)
    except ValueError as err:
        log.warning("%s", err)
        return None
    return to_open_clip_config(cfg)


def create_loss(args: Any) -> torch.nn.Module:
    """open_clip's `create_loss(args)`: the training loss picked from an argparse namespace of open_clip_train's
    flags (`distill`, `siglip`, `local_loss`, `gather_with_grad`, `rank`, `world_size`, `loss_dist_impl`, `horovod`).
    A CoCa model is refused. The typed builder is `open_mclip.loss.create_loss(kind, rank=..., ...)`."""
    if "coca" in str(getattr(args, "model", "")).lower():
        raise NotImplementedError(f"--model {args.model}: CoCa models are not supported by open_mclip")
    common = {"rank": getattr(args, "rank", 0), "world_size": getattr(args, "world_size", 1)}
    if getattr(args, "horovod", False):
        raise ValueError("--horovod: Horovod is not supported; torch.distributed (any backend) is used instead")
    if getattr(args, "distill", False):
        return loss.DistillClipLoss(args.local_loss, args.gather_with_grad, True, **common)
    if getattr(args, "siglip", False):
        return loss.create_loss("siglip", siglip_dist_impl=getattr(args, "loss_dist_impl", None), **common)
    return loss.create_loss("clip", local_loss=args.local_loss, gather_with_grad=args.gather_with_grad, **common)
