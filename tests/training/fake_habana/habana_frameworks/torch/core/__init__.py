"""Fake `habana_frameworks.torch.core`: `mark_step`, and the torch patches that make HPU autocast act on CPU tensors.

The real module also patches torch when it loads (torch.manual_seed, Module.__setattr__, init_process_group) and
registers `habana_frameworks.torch.hpu` as `torch.hpu`; the fake does the latter too.
"""

from __future__ import annotations

import torch

from habana_frameworks.fake_log import record
from habana_frameworks.torch import hpu

_TorchAutocast = torch.amp.autocast_mode.autocast
_tensor_backward = torch.Tensor.backward


def mark_step() -> None:
    """Real bridge: in lazy mode, compile and run the ops queued since the last call. Fake: record the call."""
    record("mark_step")


class _HpuAutocastOnCpu(_TorchAutocast):
    """`torch.autocast(device_type="hpu", ...)` applied to the CPU, where the fake keeps HPU tensors."""

    def __init__(self, device_type: str, dtype: torch.dtype | None = None, enabled: bool = True, cache_enabled=None):
        self.requested_device_type = device_type
        actual = "cpu" if device_type == "hpu" else device_type
        super().__init__(actual, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    def __enter__(self):
        if self.requested_device_type == "hpu":
            record("autocast", device_type="hpu", dtype=str(self.fast_dtype).removeprefix("torch."))
        return super().__enter__()


def _recorded_backward(self, *args, **kwargs):
    record("backward")
    return _tensor_backward(self, *args, **kwargs)


torch.autocast = _HpuAutocastOnCpu
torch.Tensor.backward = _recorded_backward
if not hasattr(torch, "hpu"):
    torch._register_device_module("hpu", hpu)
