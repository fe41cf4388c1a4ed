"""Random generator states (Python, NumPy, torch CPU and the device's) as checkpoint-ready values.

A mid-epoch resume restores them after fast-forwarding the loader, so augmentation and dropout continue exactly
as in an uninterrupted run. Values are tensors, ints and lists: `torch.load(weights_only=True)` reads them.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from .devices import Device


def rng_state(device: Device | None = None) -> dict[str, Any]:
    """Python, NumPy, torch CPU and the device's generator states (on the CPU, so any device can load them)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "device": {k: v.detach().cpu() for k, v in device.rng_state().items()} if device is not None else {},
    }


def set_rng_state(state: dict[str, Any], device: Device | None = None) -> None:
    """Restore what `rng_state` saved; a checkpoint from another device type restores the CPU generators only."""
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if device is not None:
        device.set_rng_state(state.get("device", {}))
