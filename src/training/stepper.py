"""The optimizer step in one place: backward -> mark_step -> unscale -> clip -> step -> update -> mark_step."""

from __future__ import annotations

from typing import Any

import torch

from open_mclip.precision import Precision

from .devices import Device


class Stepper:
    """Owns the optimizer, the grad scaler (fp16 modes, from the device) and gradient clipping; the loop only
    calls `backward` and `step`, checkpoints call `state_dict` and `load_state_dict` (as timm's NativeScaler)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        device: Device,
        precision: Precision,
        grad_clip_norm: float | None,
    ):
        self.optimizer, self.device, self.grad_clip_norm = optimizer, device, grad_clip_norm
        self.scaler: torch.amp.GradScaler | None = device.grad_scaler(precision)

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

    def state_dict(self) -> dict[str, Any]:
        """{"optimizer": ..., "scaler": ... or None}: the keys an open_clip checkpoint has for them."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` (a checkpoint without scaler state leaves a fresh scaler as it is)."""
        self.optimizer.load_state_dict(state["optimizer"])
        match_param_layouts(self.optimizer)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def match_param_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded state tensor of a parameter's shape (the AdamW moments) the parameter's strides. A
    checkpoint holds contiguous tensors, a channels-last parameter has others, and torch's fused AdamW on the CPU
    reads the two buffers as if they had the same layout: the update would come out wrong without an error."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
