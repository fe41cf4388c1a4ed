"""Fake `habana_frameworks.torch.hpex.optimizers`: FusedAdamW with the real signature, computed by torch's AdamW."""

from __future__ import annotations

import torch

from habana_frameworks.fake_log import record


class FusedAdamW(torch.optim.AdamW):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, bias_correction=True):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        record("FusedAdamW", lr=lr, betas=list(betas), eps=eps, groups=len(self.param_groups))

    @torch.no_grad()
    def step(self, closure=None):
        record("FusedAdamW.step")
        return super().step(closure)
