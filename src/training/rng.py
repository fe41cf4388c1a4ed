"""Random generator states (Python, NumPy, torch CPU and the device's) as checkpoint-ready values, and the fixed
draws each training sample's augmentation makes.

A mid-epoch resume restores the states after fast-forwarding the loader, so dropout continues exactly as in an
uninterrupted run. Augmentations draw inside `fixed_draws(seed, epoch, sample...)`, so they depend on which sample
of which epoch is being prepared and on nothing else: not on the loader worker, on how long it has been running, or
on the step the run started from. Values are tensors, ints and lists: `torch.load(weights_only=True)` reads them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
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


def draw_seed(*key: int) -> int:
    """A 63-bit seed from a tuple of ints, the same on every machine and Python process (no salted hashing)."""
    digest = hashlib.blake2b(repr(tuple(key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextmanager
def fixed_draws(*key: int) -> Iterator[None]:
    """Seed Python's and torch's CPU generators (those the library's augmentations draw from) from `key` for the
    block, and put them back as they were afterwards, so the caller's own stream (dropout) is left untouched."""
    python_state, torch_state = random.getstate(), torch.default_generator.get_state()
    seed = draw_seed(*key)
    random.seed(seed)
    torch.default_generator.manual_seed(seed)  # torch.manual_seed would also seed every accelerator (slow)
    try:
        yield
    finally:
        random.setstate(python_state)
        torch.default_generator.set_state(torch_state)
