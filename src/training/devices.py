"""One `Device` object per backend owns everything device specific, so the loop has no device branches.

Nothing touches a device at import time: Habana modules are imported in `HpuDevice.setup` only.
`get_device("auto")` picks the first available of cuda, hpu, mps, cpu.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import random
from collections.abc import Iterable
from types import ModuleType

import numpy as np
import torch

from open_mclip.precision import Precision

from .distributed import world_from_env

log = logging.getLogger(__name__)


class Device:
    """The CPU; the base class other backends refine."""

    type = "cpu"
    dist_backend = "gloo"
    pins_memory = False  # batches in page-locked memory only pay for a copy to an accelerator (--pin-memory)
    # torch's fused AdamW kernel (one pass over each tensor) exists for the CPU: on ViT-B-32 it took a tenth of the
    # per-parameter loop's time here (docs/performance.md); not verified on MPS, which keeps the loop
    fused_adamw = True
    # a ResNet image tower's convolutions in NHWC: an RN50 fp32 training step ran 1.23x faster here (bench, 3.06
    # against 2.49 samples/s; docs/performance.md section 8)
    channels_last = True

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
        """torch's AdamW, the fused kernel where `fused_adamw` says the device has one (the same update)."""
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, fused=self.fused_adamw or None)

    def clip_grad_norm(self, params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Scale gradients so that their global L2 norm is at most `max_norm`; returns the norm before clipping."""
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def memory_stats(self) -> dict[str, float]:
        return {}

    def ddp_kwargs(self) -> dict:
        """Extra arguments for DistributedDataParallel on this device."""
        return {}

    def seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def rng_state(self) -> dict[str, torch.Tensor]:
        """The accelerator's generator states for a checkpoint (the CPU's are saved by training.rng.rng_state)."""
        return {}

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `rng_state` saved; a checkpoint from another device type has nothing to restore here."""

    @property
    def compile_backend(self) -> str:
        return "inductor"

    @property
    def text_padding(self) -> dict | None:
        """How the text tower cuts padding (`set_padding_free` options), or None for the library's default: rows
        grouped by length, each group cut to its longest row (any shape; exact features either way)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.torch_device})"


class CudaDevice(Device):
    type = "cuda"
    dist_backend = "nccl"
    pins_memory = True  # open_clip_train pins its shard and synthetic loaders too
    # NVIDIA's guidance for tensor-core convolutions under autocast; not measured by this project yet (the gpu
    # suite's RN50 pair, in scripts/gpu_check.sh, does: ours channels-last and NCHW)
    channels_last = True

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

    def rng_state(self) -> dict[str, torch.Tensor]:
        return {"cuda": torch.cuda.get_rng_state(self.torch_device)}

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        if "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.torch_device)


class HpuDevice(Device):
    """An Intel Gaudi card through the Habana PyTorch bridge (`habana_frameworks`), one card per process.

    In lazy mode (`PT_HPU_LAZY_MODE=1`, the bridge's default) ops are queued into a graph that `mark_step` sends
    to the card; in eager or torch.compile mode (`PT_HPU_LAZY_MODE=0`) `mark_step` does nothing.
    """

    type = "hpu"
    dist_backend = "hccl"
    channels_last = False  # the graph compiler picks its own layouts; not measured on a card

    def __init__(self, index: int | None = None):
        if index not in (None, 0):
            raise ValueError(
                f"--device hpu:{index}: each process drives one Gaudi card, chosen by the launcher (torchrun's "
                "LOCAL_RANK or HABANA_VISIBLE_MODULES); use --device hpu"
            )
        super().__init__(None)
        self.lazy = True
        self._core: ModuleType | None = None  # habana_frameworks.torch.core, imported by setup()
        self._hpu: ModuleType | None = None  # habana_frameworks.torch.hpu (torch.hpu once the bridge is loaded)
        self._tensor_type = "hpu"
        self._clip: tuple[float, object | None] | None = None  # (max_norm, FusedClipNorm or None = not installed)

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("habana_frameworks") is not None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self._tensor_type)

    def setup(self, local_rank: int) -> None:
        self._core = importlib.import_module("habana_frameworks.torch.core")
        self._hpu = importlib.import_module("habana_frameworks.torch.hpu")
        world = world_from_env()
        if world.world_size > 1:
            # the bridge reads torchrun's variables when hccl loads; under srun alone, give it SLURM's values
            for key, value in (("WORLD_SIZE", world.world_size), ("RANK", world.rank), ("LOCAL_RANK", local_rank)):
                os.environ.setdefault(key, str(value))
            importlib.import_module("habana_frameworks.torch.distributed.hccl")  # registers the hccl backend
        self.lazy = os.environ.get("PT_HPU_LAZY_MODE", "1") != "0"
        # the bridge keeps tensors on torch.device("hpu"); a stand-in bridge may name the device it maps HPU to
        self._tensor_type = getattr(self._hpu, "TENSOR_DEVICE_TYPE", "hpu")

    @staticmethod
    def _loaded(module: ModuleType | None) -> ModuleType:
        if module is None:
            raise RuntimeError("HpuDevice.setup(local_rank) must run before the device is used")
        return module

    def autocast(self, precision: Precision):
        _reject_float16(precision)
        return super().autocast(precision)  # torch.autocast(device_type="hpu", dtype=torch.bfloat16)

    def grad_scaler(self, precision: Precision) -> None:
        """bf16 needs no loss scaling, and float16 is refused on HPU."""
        _reject_float16(precision)
        return None

    def synchronize(self) -> None:
        self._loaded(self._hpu).synchronize()

    def mark_step(self) -> None:
        if self.lazy:
            self._loaded(self._core).mark_step()

    def optimizer(self, params, *, lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
        """Habana's fused AdamW when the bridge ships it, else torch's AdamW."""
        try:
            from habana_frameworks.torch.hpex.optimizers import FusedAdamW
        except ImportError:
            log.info("habana_frameworks.torch.hpex.optimizers.FusedAdamW not importable: using torch.optim.AdamW")
            return super().optimizer(params, lr=lr, betas=betas, eps=eps)
        return FusedAdamW(params, lr=lr, betas=betas, eps=eps)

    def clip_grad_norm(self, params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Habana's FusedClipNorm (one fused kernel for all gradients) when present, else torch's clipping."""
        params = list(params)
        if self._clip is None or self._clip[0] != max_norm:
            self._clip = (max_norm, _fused_clip_norm(params, max_norm))
        clipper = self._clip[1]
        return super().clip_grad_norm(params, max_norm) if clipper is None else clipper.clip_norm(params)

    def memory_stats(self) -> dict[str, float]:
        stats = getattr(self._loaded(self._hpu), "memory_stats", None)
        if stats is None:
            return {}
        return {"max_memory_gb": stats()["MaxInUse"] / 2**30}

    def seed(self, seed: int) -> None:
        super().seed(seed)
        seed_hpu = getattr(self._loaded(self._hpu), "manual_seed_all", None)  # the HPU generator, where offered
        if seed_hpu is not None:
            seed_hpu(seed)

    def rng_state(self) -> dict[str, torch.Tensor]:
        get_state = getattr(self._loaded(self._hpu), "get_rng_state", None)
        return {"hpu": get_state()} if get_state is not None else {}

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        set_state = getattr(self._loaded(self._hpu), "set_rng_state", None)
        if "hpu" in state and set_state is not None:
            set_state(state["hpu"])

    def __repr__(self) -> str:
        return f"HpuDevice({self.torch_device}, {'lazy' if self.lazy else 'eager'} mode)"

    @property
    def text_padding(self) -> dict | None:
        """Static shapes for the graph compiler: one cut per batch (the batch size stays), rounded up to a multiple
        of 16 positions, so a 77-token context gives at most 5 text shapes."""
        return {"multiple": 16, "group_width": None}

    @property
    def compile_backend(self) -> str:
        if self.lazy:
            raise ValueError("--torchcompile on HPU needs eager mode: run with PT_HPU_LAZY_MODE=0")
        return "hpu_backend"


def _reject_float16(precision: Precision) -> None:
    if torch.float16 in (precision.autocast_dtype, precision.weight_dtype):
        raise ValueError(
            f"--precision {precision.name} uses float16, which the HPU backend does not support; "
            "use --precision amp_bf16 (mixed) or bf16/pure_bf16"
        )


def _fused_clip_norm(params: list[torch.Tensor], max_norm: float):
    try:
        from habana_frameworks.torch.hpex.normalization import FusedClipNorm
    except ImportError:
        log.info("habana_frameworks.torch.hpex.normalization.FusedClipNorm not importable: using torch clipping")
        return None
    return FusedClipNorm(params, max_norm)


class MpsDevice(Device):
    type = "mps"
    fused_adamw = False
    channels_last = False  # not measured on MPS

    @classmethod
    def available(cls) -> bool:
        return torch.backends.mps.is_available()

    def synchronize(self) -> None:
        torch.mps.synchronize()


# the order is the preference of --device auto
DEVICES: dict[str, type[Device]] = {cls.type: cls for cls in (CudaDevice, HpuDevice, MpsDevice, Device)}


def available_devices() -> list[str]:
    return [name for name, cls in DEVICES.items() if cls.available()]


def get_device(name: str = "auto") -> Device:
    """A `Device` for `cpu`, `cuda`, `hpu`, `mps` or `auto` (the first available of cuda, hpu, mps, cpu)."""
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
