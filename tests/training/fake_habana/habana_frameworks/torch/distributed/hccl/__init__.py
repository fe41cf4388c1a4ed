"""Fake `habana_frameworks.torch.distributed.hccl`: importing it registers the `hccl` backend (here: gloo on CPU)."""

from __future__ import annotations

import os

import torch.distributed as dist

from habana_frameworks.fake_log import record


def _hccl_over_gloo(store, rank: int, world_size: int, timeout):
    record("hccl_process_group", rank=rank, world_size=world_size)
    return dist.ProcessGroupGloo(store, rank, world_size, timeout)


# the real module reads these when it loads (to map the local rank to a card)
record("import_hccl", **{key.lower(): os.environ.get(key) for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK")})
if "hccl" not in dist.Backend.backend_list:
    dist.Backend.register_backend("hccl", _hccl_over_gloo, devices=["cpu"])
