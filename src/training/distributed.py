"""The distributed environment: torchrun or SLURM variables in, a process group and a `World` out."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def world_from_env(env: dict[str, str] | None = None) -> World:
    """Read torchrun's (RANK, LOCAL_RANK, WORLD_SIZE) or SLURM's (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        return World(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]))
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        return World(int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"]))
    return World()


def init_distributed(world: World, *, backend: str, dist_url: str | None = None) -> None:
    """Create the default process group when there is more than one process (env:// rendezvous by default)."""
    if not world.distributed or dist.is_initialized():
        return
    if dist_url is None and "MASTER_ADDR" not in os.environ:
        raise ValueError(
            "a multi-process run needs MASTER_ADDR/MASTER_PORT (torchrun sets them; in an sbatch script export "
            "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) and a MASTER_PORT) or --dist-url"
        )
    dist.init_process_group(backend, init_method=dist_url or "env://", rank=world.rank, world_size=world.world_size)
    log.info("process group up: rank %d of %d (%s)", world.rank, world.world_size, backend)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, world: World, *, src: int = 0):
    if not world.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def shutdown_distributed(world: World) -> None:
    """Tear the process group down once every rank is done."""
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
