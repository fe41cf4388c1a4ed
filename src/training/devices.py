"""One `Device` object per backend owns everything device specific, so the loop has no device branches.

Nothing touches a device at import time. `get_device("auto")` picks what exists.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from .precision import Precision


class Device:
    """The CPU; the base class other backends refine."""

    type = "cpu"
    dist_backend = "gloo"

    def __init__(self, index: int | None = None):
        self.index = index

    @classmethod
    def available(cls) -> bool:
        return True

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.type if self.index is None else f"{self.type}:{self.index}")

    def setup(self, local_rank: int) -> None:
        """Bind this process to its device (called once, after the distributed environment is known)."""

    def autocast(self, precision: Precision):
        if precision.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.type, dtype=precision.autocast_dtype)

    def grad_scaler(self, precision: Precision) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.type) if precision.needs_scaler else None

    def synchronize(self) -> None:
        """Wait for queued device work (timing); a no-op on the CPU."""

    def mark_step(self) -> None:
        """Flush a lazily built graph (Habana lazy mode); a no-op elsewhere."""

    def optimizer(self, params, *, lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps)

    def memory_stats(self) -> dict[str, float]:
        return {}

    def ddp_kwargs(self) -> dict:
        """Extra arguments for DistributedDataParallel on this device."""
        return {}

    def seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    @property
    def pin_memory(self) -> bool:
        return False

    @property
    def compile_backend(self) -> str:
        return "inductor"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.torch_device})"


class CudaDevice(Device):
    type = "cuda"
    dist_backend = "nccl"

    @classmethod
    def available(cls) -> bool:
        return torch.cuda.is_available()

    def setup(self, local_rank: int) -> None:
        self.index = local_rank % max(torch.cuda.device_count(), 1)
        torch.cuda.set_device(self.index)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.torch_device)

    def optimizer(self, params, *, lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, fused=True)

    def memory_stats(self) -> dict[str, float]:
        return {"max_memory_gb": torch.cuda.max_memory_allocated(self.torch_device) / 2**30}

    def ddp_kwargs(self) -> dict:
        return {"device_ids": [self.index]}

    def seed(self, seed: int) -> None:
        super().seed(seed)
        torch.cuda.manual_seed_all(seed)

    @property
    def pin_memory(self) -> bool:
        return True


class MpsDevice(Device):
    type = "mps"

    @classmethod
    def available(cls) -> bool:
        return torch.backends.mps.is_available()

    def synchronize(self) -> None:
        torch.mps.synchronize()


DEVICES: dict[str, type[Device]] = {cls.type: cls for cls in (CudaDevice, MpsDevice, Device)}


def available_devices() -> list[str]:
    return [name for name, cls in DEVICES.items() if cls.available()]


def get_device(name: str = "auto") -> Device:
    """A `Device` for `cpu`, `cuda`, `mps` or `auto` (the first available of cuda, mps, cpu)."""
    if name == "auto":
        name = available_devices()[0]
    base, _, index = name.partition(":")
    if base not in DEVICES:
        raise ValueError(f"unknown device {name!r}; known: {sorted(DEVICES)}; available here: {available_devices()}")
    cls = DEVICES[base]
    if not cls.available():
        raise ValueError(f"--device {name} was asked for but is not available here; available: {available_devices()}")
    return cls(int(index) if index else None)


def local_rank_from_env() -> int:
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        if key in os.environ:
            return int(os.environ[key])
    return 0
