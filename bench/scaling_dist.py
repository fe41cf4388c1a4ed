"""The CLIP loss with gather-with-grad across processes (gloo, on the CPU), open_clip's beside ours, in one
process group: timed in alternation, checked against the single-process loss on the whole batch, and measured for
peak memory in a fresh group per side.

Both sides use `ClipLoss(local_loss=True, gather_with_grad=True)`, the setting for large batches: each rank scores
its own rows against all gathered columns. The mean of the ranks' losses must equal the single-process loss on the
full batch, and each rank's feature gradients, divided by the world size, the full batch's rows of it (the gather's
backward sums every rank's loss into each shard).
"""

from __future__ import annotations

import functools
import multiprocessing
import queue as queue_module
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from bench.harness import REFERENCE, start_measured


def features(batch: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: normalised image features and text features near them (the same on every rank)."""
    generator = torch.Generator().manual_seed(2)
    image = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(image + 0.5 * torch.randn(batch, dim, generator=generator), dim=-1)
    return image, text


def _open_clip_loss_class() -> type:
    """open_clip's ClipLoss from its loss.py alone: importing the whole package costs each rank seconds."""
    import importlib.util
    from pathlib import Path

    path = Path(importlib.util.find_spec("open_clip").submodule_search_locations[0]) / "loss.py"
    spec = importlib.util.spec_from_file_location("open_clip_loss_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ClipLoss


def _loss(side: str, *, rank: int, world_size: int) -> torch.nn.Module:
    from open_mclip.loss import ClipLoss

    options = {"local_loss": True, "gather_with_grad": True, "rank": rank, "world_size": world_size}
    return _open_clip_loss_class()(**options) if side == REFERENCE else ClipLoss(**options)


def _step(loss_fn: torch.nn.Module, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Loss forward and backward on this rank's shard: (loss, image grad, text grad)."""
    image, text = image.clone().requires_grad_(), text.clone().requires_grad_()
    loss = loss_fn(image, text, torch.tensor(100.0))
    loss.backward()
    return loss.detach(), image.grad, text.grad


def _gathered(tensor: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    shards = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(shards, tensor.contiguous())
    return shards


def check_against_single_process(outputs: tuple[torch.Tensor, ...], image: torch.Tensor, text: torch.Tensor) -> None:
    """Raise unless the ranks' mean loss and gradients (over the world size) are the full batch's on one process."""
    from open_mclip.loss import ClipLoss

    world_size = dist.get_world_size()
    loss, image_grad, text_grad = (_gathered(t.reshape(-1) if t.ndim == 0 else t, world_size) for t in outputs)
    error = None
    if dist.get_rank() == 0:
        try:
            expected = _step(ClipLoss(), image, text)
            torch.testing.assert_close(torch.cat(loss).mean(), expected[0], rtol=1e-5, atol=1e-5)
            for got, want in ((image_grad, expected[1]), (text_grad, expected[2])):
                tolerance = 1e-4 * float(want.abs().max())
                torch.testing.assert_close(torch.cat(got) / world_size, want, rtol=1e-4, atol=tolerance)
        except AssertionError as failed:
            error = str(failed)
    flag = torch.tensor([error is not None], dtype=torch.int32)
    dist.broadcast(flag, src=0)  # every rank stops, not only the one that checked
    if flag.item():
        raise AssertionError(f"not the single-process loss on the full batch: {error or 'see rank 0'}")


def _timed(call: Callable[[], Any]) -> float:
    import time

    dist.barrier()
    start = time.perf_counter()
    call()
    dist.barrier()  # the slowest rank decides
    return time.perf_counter() - start


def _time_job(job: dict, rank: int, world_size: int) -> dict[str, Any]:
    image, text = features(job["batch"], job["dim"])
    rows = slice(rank * job["batch"] // world_size, (rank + 1) * job["batch"] // world_size)
    calls = {
        side: functools.partial(_step, _loss(side, rank=rank, world_size=world_size), image[rows], text[rows])
        for side in job["sides"]
    }
    for call in calls.values():  # the first call of each side is checked
        check_against_single_process(call(), image, text)
    del image, text
    for _ in range(job["warmup"]):
        for call in calls.values():
            call()
    seconds: dict[str, list[float]] = {side: [] for side in calls}
    for repeat in range(job["repeats"]):
        order = list(calls) if repeat % 2 == 0 else list(reversed(calls))
        for side in order:
            seconds[side].append(_timed(calls[side]))
    return {"seconds": seconds}


def _memory_job(job: dict, rank: int, world_size: int) -> dict[str, Any]:
    from bench.harness import _status_kib

    (side,) = job["sides"]
    image, text = features(job["batch"], job["dim"])
    rows = slice(rank * job["batch"] // world_size, (rank + 1) * job["batch"] // world_size)
    image, text = image[rows].clone(), text[rows].clone()
    call = functools.partial(_step, _loss(side, rank=rank, world_size=world_size), image, text)
    call()  # warm-up
    dist.barrier()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = _status_kib("VmRSS")
    call()
    return {"peak_extra_bytes": (_status_kib("VmHWM") - before) * 1024}


def _rank_main(rank: int, world_size: int, port: int, job: dict, results: multiprocessing.Queue) -> None:
    torch.set_num_threads(job["threads"])
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
        try:
            results.put((rank, (_time_job if job["mode"] == "time" else _memory_job)(job, rank, world_size)))
        finally:
            dist.destroy_process_group()
    except BaseException as error:  # report, so the parent does not wait for a result that never comes
        results.put((rank, f"{type(error).__name__}: {error}"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(job: dict, *, world_size: int) -> list[dict[str, Any]]:
    """Run `job` on `world_size` fresh gloo ranks; each rank's result dict, in rank order."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    processes = [
        context.Process(target=_rank_main, args=(r, world_size, port, job, results)) for r in range(world_size)
    ]
    start_measured(processes)
    collected: dict[int, Any] = {}
    while len(collected) < world_size:
        try:
            rank, result = results.get(timeout=5)
            collected[rank] = result
        except queue_module.Empty:
            dead = [p.exitcode for p in processes if not p.is_alive() and p.exitcode != 0]
            if dead:
                raise RuntimeError(f"a rank of the {job['mode']} job died ({dead[0]})") from None
    for process in processes:
        process.join()
    failed = [f"rank {r}: {result}" for r, result in sorted(collected.items()) if isinstance(result, str)]
    if failed:
        raise RuntimeError("; ".join(failed))
    return [collected[r] for r in range(world_size)]


def distributed_loss(
    *,
    batch: int,
    sides: tuple[str, ...],
    dim: int = 512,
    world_size: int = 2,
    repeats: int = 5,
    warmup: int = 1,
    memory: bool = True,
) -> dict[str, Any]:
    """Seconds per call of each side (global batch `batch` over `world_size` ranks, one thread each), after checking
    both against the single-process loss; then (`memory`) each side's peak extra memory summed over its ranks,
    measured alone in a fresh group."""
    job = {"batch": batch, "dim": dim, "sides": sides, "repeats": repeats, "warmup": warmup, "threads": 1}
    if batch % world_size:
        raise ValueError(f"batch={batch} does not split evenly over {world_size} ranks")
    seconds = launch({**job, "mode": "time"}, world_size=world_size)[0]["seconds"]
    measured = {side: {"seconds": seconds[side]} for side in sides}
    for side in sides if memory else ():
        ranks = launch({**job, "mode": "memory", "sides": (side,)}, world_size=world_size)
        measured[side]["peak_extra_bytes"] = sum(r["peak_extra_bytes"] for r in ranks)
    return measured
