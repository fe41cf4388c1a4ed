"""The optimizer step in one place: backward -> mark_step -> unscale -> clip -> step -> update -> mark_step."""

from __future__ import annotations

import torch

from .devices import Device


class Stepper:
    """Owns the optimizer, the optional grad scaler and gradient clipping; the loop only calls it."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        device: Device,
        scaler: torch.amp.GradScaler | None,
        grad_clip_norm: float | None,
    ):
        self.optimizer, self.device, self.scaler, self.grad_clip_norm = optimizer, device, scaler, grad_clip_norm

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self.device.mark_step()

    def step(self) -> None:
        """Apply the accumulated gradients and clear them."""
        if self.grad_clip_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            self.device.clip_grad_norm(params, self.grad_clip_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.device.mark_step()
        self.optimizer.zero_grad(set_to_none=True)
