"""Learning-rate schedules as pure functions of the step: linear warm-up, then cosine, constant, or constant
with a final cool-down (open_clip's `cosine`, `const`, `const-cooldown`)."""

from __future__ import annotations

import math

import torch

from .config import ScheduleConfig


def lr_factor(step: int, *, cfg: ScheduleConfig, total_steps: int, cooldown_steps: int = 0, base_lr: float = 1.0):
    """Learning rate at optimizer step `step` for a peak of `base_lr`."""
    warmup = cfg.warmup
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if cfg.lr_scheduler == "const":
        return base_lr
    if cfg.lr_scheduler == "cosine":
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * base_lr
    if cfg.lr_scheduler == "const-cooldown":
        start = total_steps - cooldown_steps
        if step < start:
            return base_lr
        progress = (step - start) / max(cooldown_steps, 1)
        return cfg.lr_cooldown_end + (base_lr - cfg.lr_cooldown_end) * (1 - progress) ** cfg.lr_cooldown_power
    raise ValueError(f"unknown --lr-scheduler {cfg.lr_scheduler!r}; use cosine, const or const-cooldown")


class Scheduler:
    """Sets each param group's lr from its `base_lr` at every step (skipped with --skip-scheduler)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, steps_per_epoch: int):
        if cfg.lr_scheduler == "const-cooldown" and not cfg.epochs_cooldown:
            raise ValueError("--lr-scheduler const-cooldown needs --epochs-cooldown")
        self.optimizer, self.cfg = optimizer, cfg
        self.total_steps = steps_per_epoch * cfg.epochs
        self.cooldown_steps = steps_per_epoch * (cfg.epochs_cooldown or 0)

    def __call__(self, step: int) -> float:
        lr = 0.0
        for group in self.optimizer.param_groups:
            lr = lr_factor(
                step,
                cfg=self.cfg,
                total_steps=self.total_steps,
                cooldown_steps=self.cooldown_steps,
                base_lr=group["base_lr"],
            )
            if not self.cfg.skip_scheduler:
                group["lr"] = lr
        return self.optimizer.param_groups[-1]["lr"]
