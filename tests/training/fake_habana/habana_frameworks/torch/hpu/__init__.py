"""Fake `habana_frameworks.torch.hpu` (the real one becomes `torch.hpu`): one card, backed by the CPU."""

from __future__ import annotations

import torch

from habana_frameworks.fake_log import record

# the fake's own hook: HpuDevice places "HPU" tensors on this torch device type (the real bridge uses "hpu")
TENSOR_DEVICE_TYPE = "cpu"

MAX_IN_USE_BYTES = 3 * 2**29  # what memory_stats reports as peak use: 1.5 GiB


def is_available() -> bool:
    return True


def device_count() -> int:
    return 1


def current_device() -> int:
    return 0


def synchronize() -> None:
    record("synchronize")


def memory_stats(device=None) -> dict[str, int]:
    record("memory_stats")
    return {"Limit": 8 * 2**30, "InUse": 2**29, "MaxInUse": MAX_IN_USE_BYTES, "NumAllocs": 0, "NumFrees": 0}


_GENERATOR = {"state": torch.zeros(4, dtype=torch.int64)}  # the fake HPU generator: its state is the last seed


def manual_seed(seed: int) -> None:
    record("manual_seed", seed=int(seed))
    _GENERATOR["state"] = torch.full((4,), int(seed), dtype=torch.int64)


def get_rng_state() -> torch.Tensor:
    return _GENERATOR["state"].clone()


def set_rng_state(state: torch.Tensor) -> None:
    _GENERATOR["state"] = state.clone()


def manual_seed_all(seed: int) -> None:
    manual_seed(seed)
