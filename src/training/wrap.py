"""The model as training runs it: DistributedDataParallel across ranks and torch.compile, and the way back.

Checkpoints, the optimizer, locking and evaluation use the bare CLIP module; only the training forward pass goes
through the wrappers.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig, SystemConfig
from .devices import Device
from .distributed import World


def wrap_for_training(
    model: nn.Module, *, model_cfg: ModelConfig, system: SystemConfig, world: World, device: Device
) -> nn.Module:
    """`model` in SyncBatchNorm (--use-bn-sync) and DDP when there are several ranks, compiled with --torchcompile."""
    if world.distributed:
        if system.use_bn_sync:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, static_graph=system.ddp_static_graph, **device.ddp_kwargs())
    if model_cfg.torchcompile:
        model = torch.compile(model, backend=device.compile_backend)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The CLIP module inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner
