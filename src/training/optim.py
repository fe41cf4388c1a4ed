"""AdamW with open_clip's defaults and no weight decay on gains, biases, embeddings and the logit scale."""

from __future__ import annotations

import torch
from torch import nn

from .config import OptimArgs
from .devices import Device


def adam_defaults(model_name: str) -> dict[str, float]:
    """The CLIP paper's AdamW settings (ViT towers use beta2 0.98 and eps 1e-6)."""
    if "vit" in model_name.lower():
        return {"lr": 5.0e-4, "beta1": 0.9, "beta2": 0.98, "eps": 1.0e-6}
    return {"lr": 5.0e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1.0e-8}


def no_decay_names(model: nn.Module) -> set[str]:
    """1-d parameters (gains, biases, scales), embedding tables, and what the towers declare."""
    names = {n for n, p in model.named_parameters() if p.ndim < 2}
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            names.add(f"{module_name}.weight")
    declared = getattr(model, "no_weight_decay", None)
    return names | (set(declared()) if declared else set())


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two groups: decayed matrices and undecayed rest; frozen parameters are left out."""
    skip = no_decay_names(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in skip else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def create_optimizer(model: nn.Module, cfg: OptimArgs, *, model_name: str, device: Device) -> torch.optim.Optimizer:
    if cfg.opt != "adamw":
        raise ValueError(f"--opt {cfg.opt} is not supported; use adamw")
    defaults = adam_defaults(model_name)
    lr = cfg.lr if cfg.lr is not None else defaults["lr"]
    betas = (cfg.beta1 if cfg.beta1 is not None else defaults["beta1"], cfg.beta2 or defaults["beta2"])
    eps = cfg.eps if cfg.eps is not None else defaults["eps"]
    optimizer = device.optimizer(param_groups(model, weight_decay=cfg.wd), lr=lr, betas=betas, eps=eps)
    for group in optimizer.param_groups:
        group["base_lr"] = lr
    return optimizer
