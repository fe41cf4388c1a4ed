"""OpenAI's original CLIP checkpoints by name or file: open_clip's `list_openai_models` and `load_openai_model`.

The archives are read by `weights_io` without running their TorchScript code; the architecture is read off the
weights. `create_model(name, pretrained="openai")` is the usual way to the same weights.
"""

from __future__ import annotations

import os

import torch

from .convert import from_open_clip
from .model import CLIP, build_model_from_openai_state_dict
from .precision import convert_weights_to_lp
from .pretrained import download_url, get_pretrained_url, list_pretrained_models_by_tag
from .transform import PreprocessConfig
from .weights_io import load_weights_file

__all__ = ["list_openai_models", "load_openai_model"]

_DEFAULT_PRECISION = {"cpu": "fp32"}  # open_clip's default: fp32 on the CPU, fp16 on an accelerator


def list_openai_models() -> list[str]:
    """The architectures with OpenAI's weights (the `openai` tag)."""
    return list_pretrained_models_by_tag("openai")


def load_openai_model(
    name: str,
    precision: str | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
) -> CLIP:
    """An OpenAI CLIP model in eval mode, from an architecture in `list_openai_models()` or a checkpoint file.

    As open_clip: `precision` defaults to fp32 on the CPU and fp16 elsewhere; `fp16`/`bf16` keep norms and
    embeddings in float32. A file in open_clip's layout (`state_dict` nested, `module.` prefixes) is read too.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision is None:
        precision = _DEFAULT_PRECISION.get(torch.device(device).type, "fp16")
    if precision not in ("fp32", "fp16", "bf16", "amp", "amp_bf16", "amp_bfloat16"):
        raise ValueError(f"precision={precision!r}: load_openai_model supports fp32, fp16, bf16 and the amp modes")
    url = get_pretrained_url(name, "openai")
    if url:
        path = download_url(url, cache_dir=cache_dir)
    elif os.path.isfile(name):
        path = name
    else:
        raise RuntimeError(f"Model {name} not found; available models = {list_openai_models()}")
    model = build_model_from_openai_state_dict(_openai_layout(load_weights_file(path))).to(device)
    if precision != "fp16":
        model.float()
        if precision == "bf16":
            convert_weights_to_lp(model, torch.bfloat16)
    model.preprocess_cfg = PreprocessConfig(size=model.visual.image_size)  # OpenAI's mean and std, bicubic
    return model


def _openai_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Back to OpenAI's key layout (text tower at the top level) whatever layout the file used."""
    ours = from_open_clip(state_dict)
    return {k.removeprefix("text."): v for k, v in ours.items()}
