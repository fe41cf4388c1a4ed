"""Precision modes: one table, used by `create_model` (weight casting) and by the trainer (autocast, inputs, scaler).

Spellings follow open_clip: `fp32`, `amp` (float16 autocast), `amp_bf16` (alias `amp_bfloat16`), `bf16`/`fp16`
(16-bit matrix weights, norms and embeddings kept in float32, as open_clip's `convert_weights_to_lp`), and
`pure_bf16`/`pure_fp16` (every weight 16-bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import LayerNorm

ALIASES = {"amp_bfloat16": "amp_bf16"}


@dataclass(frozen=True)
class Precision:
    """What a precision mode means for the weights, autocast, the inputs and the grad scaler."""

    name: str
    autocast_dtype: torch.dtype | None  # dtype for torch.autocast; None: no autocast
    weight_dtype: torch.dtype  # dtype of the matrix weights (convolutions, linear layers, projections)
    cast_all: bool  # every weight in weight_dtype (pure_*), not only the matrix weights
    input_dtype: torch.dtype  # dtype images are fed in
    needs_scaler: bool  # float16 autocast gradients underflow without loss scaling (only `amp`, as open_clip)

    @classmethod
    def parse(cls, name: str) -> Precision:
        """The mode named `name`; an unknown name is a ValueError listing the choices."""
        canonical = ALIASES.get(name, name)
        if canonical not in _MODES:
            raise ValueError(f"unknown precision {name!r}; choose one of {list(PRECISION_CHOICES)}")
        return cls(canonical, *_MODES[canonical])

    @property
    def cast_dtype(self) -> torch.dtype | None:
        """open_clip's `get_cast_dtype`: the 16-bit dtype of the mixed bf16/fp16 modes, else None."""
        return self.weight_dtype if self.weight_dtype != torch.float32 and not self.cast_all else None

    def cast_model(self, model: nn.Module) -> None:
        """Cast `model`'s weights in place for this mode (nothing for fp32 and the autocast modes)."""
        if self.weight_dtype == torch.float32:
            return
        if self.cast_all:
            model.to(self.weight_dtype)
        elif any(getattr(m, "lp_casts_whole_model", False) for m in model.modules()):
            # open_clip casts a model with a timm trunk whole, then only its own LayerNorms back to float32
            model.to(self.weight_dtype)
            for module in model.modules():
                if isinstance(module, LayerNorm):
                    module.float()
        else:
            convert_weights_to_lp(model, self.weight_dtype)


_F32, _F16, _BF16 = torch.float32, torch.float16, torch.bfloat16
# name: (autocast dtype, weight dtype, cast all, input dtype, needs scaler). open_clip scales the loss for "amp"
# alone: a GradScaler cannot unscale the float16 gradients of float16 weights (fp16, pure_fp16)
_MODES = {
    "fp32": (None, _F32, False, _F32, False),
    "amp": (_F16, _F32, False, _F32, True),
    "amp_bf16": (_BF16, _F32, False, _F32, False),
    "bf16": (None, _BF16, False, _BF16, False),
    "fp16": (None, _F16, False, _F16, False),
    "pure_bf16": (None, _BF16, True, _BF16, False),
    "pure_fp16": (None, _F16, True, _F16, False),
}
PRECISION_CHOICES = (*_MODES, *ALIASES)

# parameters held directly by a module (not by a Linear/Conv child) that are matrix weights of its attention or head
_MATRIX_PARAMS = frozenset(
    "in_proj_weight q_proj_weight k_proj_weight v_proj_weight in_proj_bias bias_k bias_v text_projection proj".split()
)


def convert_weights_to_lp(model: nn.Module, dtype: torch.dtype = torch.float16) -> None:
    """Cast the matrix weights to `dtype` and leave norms, embeddings, gains and the logit scale in float32.

    The same parameters as open_clip's `convert_weights_to_lp`: convolution and linear weights and biases,
    attention input projections, and the towers' projection matrices (`text_projection`, `proj`).
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            params = [module.weight, module.bias]
        else:
            params = [p for name, p in module.named_parameters(recurse=False) if name in _MATRIX_PARAMS]
        for param in params:
            if param is not None:
                param.data = param.data.to(dtype)
