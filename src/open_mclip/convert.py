"""Foreign state dicts in and out: open_clip's `CLIP` and `CustomTextCLIP` layouts and OpenAI's CLIP.

Our parameter names equal open_clip's `CustomTextCLIP` names (`visual.*`, `text.*`, `logit_scale`), so the
only structural change is open_clip's `CLIP` layout (and OpenAI's), which keeps the text tower at the top
level. Loading is strict by default: every key consumed and none missing, or an error that lists them;
`load_checkpoint` has open_clip's signature and return value (torch's `_IncompatibleKeys`).
"""

from __future__ import annotations

import logging
import math
import os

import torch
import torch.nn.functional as F
from torch.nn.modules.module import _IncompatibleKeys

from .config import ModelConfig, ModifiedResNetConfig, TextTransformerConfig, ViTConfig
from .weights_io import load_weights_file

log = logging.getLogger(__name__)

# text-tower keys that open_clip's CLIP layout (and OpenAI's) keep at the top level
_TEXT_TOP_LEVEL = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
# entries of OpenAI / open_clip state dicts that are not weights
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "text.transformer.embeddings.position_ids")


def is_clip_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for open_clip `CLIP` / OpenAI layout (text tower at top level), False for `CustomTextCLIP`/ours."""
    return any(k.startswith(_TEXT_TOP_LEVEL) for k in state_dict)


def from_open_clip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an open_clip (either layout) or OpenAI state dict onto our names."""
    if state_dict and all(k.startswith("module.") for k in state_dict):  # saved from DistributedDataParallel
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    clip_layout = is_clip_layout(state_dict)
    out = {}
    for key, value in state_dict.items():
        if key in _NOT_WEIGHTS or key == "attn_mask" or key.endswith(".attn_mask"):
            continue
        out[f"text.{key}" if clip_layout and key.startswith(_TEXT_TOP_LEVEL) else key] = value
    return out


def to_open_clip(state_dict: dict[str, torch.Tensor], *, layout: str = "clip") -> dict[str, torch.Tensor]:
    """Our state dict in open_clip's `clip` layout (built-in text tower) or its `custom_text` layout."""
    if layout == "custom_text":
        return dict(state_dict)
    if layout != "clip":
        raise ValueError(f"unknown open_clip layout {layout!r}; use 'clip' or 'custom_text'")
    return {k[len("text.") :] if k.startswith("text.") else k: v for k, v in state_dict.items()}


def config_from_openai_state_dict(state_dict: dict[str, torch.Tensor], *, quick_gelu: bool = True) -> ModelConfig:
    """Infer the architecture of an OpenAI-layout CLIP checkpoint from its tensor shapes."""
    sd = state_dict
    act = "quick_gelu" if quick_gelu else "gelu"
    if "visual.proj" in sd:
        width, _, patch, _ = sd["visual.conv1.weight"].shape
        layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
        grid = round(math.sqrt(sd["visual.positional_embedding"].shape[0] - 1))
        vision = ViTConfig(image_size=grid * patch, patch_size=patch, width=width, layers=layers, act=act)
    else:
        depths = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{i}.")}) for i in (1, 2, 3, 4))
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        spatial = round(math.sqrt(sd["visual.attnpool.positional_embedding"].shape[0] - 1))
        vision = ModifiedResNetConfig(image_size=spatial * 32, layers=depths, width=width)
    text_width = sd["ln_final.weight"].shape[0]
    text = TextTransformerConfig(
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        width=text_width,
        heads=text_width // 64,
        layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
        act=act,
    )
    return ModelConfig(embed_dim=sd["text_projection"].shape[1], vision=vision, text=text)


def resize_position_embedding(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Interpolate a ViT's position grid (bicubic, antialiased) when the checkpoint's image size differs."""
    key = "visual.positional_embedding"
    grid = getattr(model.visual, "grid_size", None)
    if key not in state_dict or grid is None or state_dict[key].shape[0] == grid[0] * grid[1] + 1:
        return
    old = state_dict[key]
    cls_pos, patch_pos = old[:1], old[1:]  # (1, width), (old_h * old_w, width)
    side = int(math.sqrt(patch_pos.shape[0]))
    log.info("resizing position embedding grid from %sx%s to %sx%s", side, side, *grid)
    patch_pos = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()  # (1, width, side, side)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", antialias=True, align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(old.dtype)
    state_dict[key] = torch.cat([cls_pos, patch_pos], dim=0)


class CheckpointMismatchError(ValueError, RuntimeError):
    """A checkpoint's keys or shapes do not fit the model; the message lists every difference.

    A ValueError (bad input) that is also a RuntimeError, the type open_clip's loading raises (torch's
    `load_state_dict`), so code written for either catches it.
    """


def _fit_to_model(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adjustments open_clip makes before loading: scalar/1-element logit scale and bias, a zero logit bias for
    CLIP weights in a SigLIP-style model, and the ViT position grid resized to the model's image size."""
    state_dict = dict(state_dict)
    own = model.state_dict()
    for key in ("logit_scale", "logit_bias"):  # open_clip's nonscalar_logit_scale stores shape (1,)
        if key in state_dict and key in own and state_dict[key].numel() == own[key].numel() == 1:
            state_dict[key] = state_dict[key].reshape(own[key].shape)
    if "logit_bias" in own and "logit_bias" not in state_dict and "logit_scale" in state_dict:
        # CLIP weights into a SigLIP-style model; from the checkpoint's tensor, as the model's may be on the meta device
        state_dict["logit_bias"] = torch.zeros_like(state_dict["logit_scale"]).reshape(own["logit_bias"].shape)
    resize_position_embedding(state_dict, model)
    return state_dict


def _mismatch_message(source: str, *, missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = [f"{source} does not match the model:"]
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if keys:
            parts.append(f"  {label} ({len(keys)}): {', '.join(keys[:40])}{' ...' if len(keys) > 40 else ''}")
    return "\n".join(parts)


def _load_state_dict(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str, strict: bool, assign: bool
) -> _IncompatibleKeys:
    """Load our-layout weights. Mis-shaped keys always raise (as torch's `load_state_dict` does, strict or not);
    missing and unexpected keys raise when `strict`, else they are returned."""
    state_dict = _fit_to_model(model, state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if state_dict[k].shape != own[k].shape
    )
    if shapes or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(_mismatch_message(source, missing=missing, unexpected=unexpected, shapes=shapes))
    if assign and missing:  # those parameters would stay on the meta device, without values
        raise CheckpointMismatchError(
            _mismatch_message(f"{source} (assign=True needs every weight)", missing=missing, unexpected=[], shapes=[])
        )
    result = model.load_state_dict(state_dict, strict=strict, assign=assign)
    if assign:
        model.float()
    return result


def load_state_dict_strict(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str, assign: bool = False
) -> None:
    """Load our-layout weights; raise `CheckpointMismatchError` (a ValueError) listing missing, unexpected and
    mis-shaped keys.

    `assign=True` adopts the checkpoint's tensors (for a model built on the meta device, which skips random
    initialisation); floating tensors are then made float32, as a freshly built model is.
    """
    _load_state_dict(model, state_dict, source=source, strict=True, assign=assign)


def load_checkpoint(
    model: torch.nn.Module,
    checkpoint_path: str | os.PathLike,
    strict: bool = True,
    weights_only: bool = True,
    device: str | torch.device = "cpu",
    *,
    assign: bool = False,
) -> _IncompatibleKeys:
    """Load an open_clip (either layout), OpenAI or open_mclip checkpoint file into `model`, as open_clip's does.

    Returns torch's `_IncompatibleKeys(missing_keys, unexpected_keys)`: empty when `strict` (any difference raises
    `CheckpointMismatchError`, listing them all); with `strict=False` what matches is loaded and the rest returned.
    Mis-shaped keys raise either way, as in open_clip. `device` is where the checkpoint's tensors are read to.
    `weights_only=False` is refused: every format (safetensors, torch pickles, OpenAI's TorchScript archives) is
    read without unpickling code. `assign` (ours) adopts the checkpoint's tensors, for a model on the meta device.
    """
    path = os.fspath(checkpoint_path)
    if not weights_only:
        raise ValueError(
            "load_checkpoint(weights_only=False) is refused: it would let the checkpoint run arbitrary code when "
            "unpickled, and open_mclip reads every checkpoint format (safetensors, torch pickles, OpenAI TorchScript "
            "archives) without that; pass weights_only=True"
        )
    if path.endswith((".npz", ".npy")):
        raise ValueError(f"{path}: big_vision numpy checkpoints (.npz/.npy) are not supported; convert them first")
    state_dict = from_open_clip(load_weights_file(path))
    state_dict = {key: value.to(device) for key, value in state_dict.items()}  # a no-op where they already are
    return _load_state_dict(model, state_dict, source=path, strict=strict, assign=assign)
