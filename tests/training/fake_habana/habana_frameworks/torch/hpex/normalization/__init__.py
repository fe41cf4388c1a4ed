"""Fake `habana_frameworks.torch.hpex.normalization`: FusedClipNorm with the real interface, computed by torch."""

from __future__ import annotations

import torch

from habana_frameworks.fake_log import record


class FusedClipNorm:
    """Built once with the parameters and the bound; `clip_norm(parameters)` clips and returns the total norm."""

    def __init__(self, parameters, max_norm: float):
        self.max_norm = float(max_norm)
        record("FusedClipNorm", max_norm=self.max_norm)

    def clip_norm(self, parameters) -> torch.Tensor:
        record("FusedClipNorm.clip_norm")
        return torch.nn.utils.clip_grad_norm_(parameters, self.max_norm)
