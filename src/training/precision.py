"""Precision modes: one spelling per mode plus open_clip's aliases, parsed into what each part needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

_ALIASES = {"amp_bfloat16": "amp_bf16"}


@dataclass(frozen=True)
class Precision:
    """What a precision mode means for the model weights, autocast, the inputs and the grad scaler."""

    name: str
    autocast_dtype: torch.dtype | None  # dtype for torch.autocast, None = no autocast
    param_dtype: torch.dtype  # dtype most weights are stored in
    input_dtype: torch.dtype  # dtype images are fed in
    needs_scaler: bool  # fp16 gradients underflow without loss scaling

    @classmethod
    def parse(cls, name: str) -> Precision:
        name = _ALIASES.get(name, name)
        modes = {
            "fp32": (None, torch.float32, torch.float32, False),
            "amp": (torch.float16, torch.float32, torch.float32, True),
            "amp_bf16": (torch.bfloat16, torch.float32, torch.float32, False),
            "fp16": (None, torch.float16, torch.float16, True),
            "bf16": (None, torch.bfloat16, torch.bfloat16, False),
            "pure_fp16": (None, torch.float16, torch.float16, True),
            "pure_bf16": (None, torch.bfloat16, torch.bfloat16, False),
        }
        if name not in modes:
            raise ValueError(f"unknown precision {name!r}; choose one of {sorted(modes) + sorted(_ALIASES)}")
        return cls(name, *modes[name])


PRECISION_CHOICES = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "pure_bf16", "pure_fp16", "fp32")
