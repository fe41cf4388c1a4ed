"""Side-by-side benchmarks: open_clip and open_mclip doing the same work, checked equal, then timed.

Both sides run in one process and are timed in alternation (A B, B A, ...), so both see the same machine load;
the figure reported is the ratio of their median throughputs. Peak memory is measured for each side alone in a
fresh process (a steady-state call after one warm-up call), so that neither side's caches distort the other's.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import platform
import queue as queue_module
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

SIDES = ("open_clip", "open_mclip")
REFERENCE, OURS = SIDES


@dataclass(frozen=True)
class Case:
    """One benchmark: `builder` ("module:function") returns, for the sides asked, a callable doing one unit of work.

    The builder must be a top-level function (it is called again in a fresh process for the memory measurement);
    `items` is what one call processes (samples, texts, images), for throughput. `check(reference_out, our_out)`
    raises if the two sides did not compute the same thing; it runs on the first call of each side.
    """

    name: str
    builder: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    items: int = 1
    unit: str = "samples"
    check: Callable[[Any, Any], None] | None = None


def build(case: Case, sides: tuple[str, ...]) -> dict[str, Callable[[], Any]]:
    """Resolve the case's builder and build the callables of `sides`."""
    module_name, function_name = case.builder.split(":")
    calls = getattr(importlib.import_module(module_name), function_name)(sides=sides, **case.kwargs)
    missing = [side for side in sides if side not in calls]
    assert not missing, f"{case.builder} built no callable for {missing}"
    return calls


def synchronize(device: str) -> None:
    """Wait for queued accelerator work, so a timer measures the work and not its launch."""
    kind = torch.device(device).type
    if kind != "cpu":
        getattr(torch, kind).synchronize()


def time_sides(
    calls: dict[str, Callable[[], Any]], *, device: str, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each side, `repeats` times, alternating which side goes first."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    synchronize(device)
    seconds: dict[str, list[float]] = {side: [] for side in calls}
    for repeat in range(repeats):
        order = list(calls) if repeat % 2 == 0 else list(reversed(calls))
        for side in order:
            start = time.perf_counter()
            calls[side]()
            synchronize(device)
            seconds[side].append(time.perf_counter() - start)
    return seconds


def _status_kib(field_name: str) -> int:
    """A size field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name} (peak memory on the CPU needs Linux)")


def _peak_extra_bytes(call: Callable[[], Any], device: str) -> int:
    """Extra memory at the peak of one call over what was in use before it: resident memory on the CPU, the
    allocator's allocated bytes on an accelerator."""
    kind = torch.device(device).type
    if kind == "cpu":
        with open("/proc/self/clear_refs", "w") as clear:  # "5" resets the peak-RSS mark (VmHWM) to the current RSS
            clear.write("5")
        before = _status_kib("VmRSS")
        call()
        return (_status_kib("VmHWM") - before) * 1024
    accelerator = getattr(torch, kind)
    synchronize(device)
    accelerator.reset_peak_memory_stats()
    before = accelerator.memory_allocated()
    call()
    synchronize(device)
    return accelerator.max_memory_allocated() - before


def _memory_child(case: Case, side: str, device: str, queue: multiprocessing.Queue) -> None:
    try:
        call = build(case, (side,))[side]
        call()  # warm-up: lazily built state (optimizer moments, caches) is not part of the steady state
        queue.put(_peak_extra_bytes(call, device))
    except BaseException as error:  # report, so the parent does not wait for a result that never comes
        queue.put(f"{type(error).__name__}: {error}")


_MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"


def start_measured(processes: list) -> None:
    """Start child processes whose resident memory is measured. glibc keeps freed blocks below its (self-raising)
    mmap threshold resident; a fixed threshold hands large blocks back to the system on free, so the resident size
    follows what is really in use. Only the children get it: the parent's environment is restored."""
    previous = os.environ.get(_MMAP_THRESHOLD)
    os.environ[_MMAP_THRESHOLD] = str(1 << 20)
    try:
        for process in processes:
            process.start()
    finally:
        if previous is None:
            del os.environ[_MMAP_THRESHOLD]
        else:
            os.environ[_MMAP_THRESHOLD] = previous


def peak_memory(case: Case, side: str, *, device: str) -> int:
    """Extra peak memory of one steady-state call of `side`, measured alone in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_memory_child, args=(case, side, device, queue))
    start_measured([child])
    while True:  # a child killed outright (out of memory, a crash) reports nothing: notice it instead of waiting
        try:
            result = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not child.is_alive():
                message = f"{case.name}: measuring {side}'s memory: the process died ({child.exitcode})"
                raise RuntimeError(message) from None
    child.join()
    if isinstance(result, str):
        raise RuntimeError(f"{case.name}: measuring {side}'s memory failed: {result}")
    return result


def run_case(case: Case, *, device: str, warmup: int = 1, repeats: int = 5, memory: bool = True) -> dict[str, Any]:
    """Check both sides agree, time them side by side and (optionally) measure their peak memory."""
    calls = build(case, SIDES)
    outputs = {side: call() for side, call in calls.items()}
    if case.check is not None:
        case.check(outputs[REFERENCE], outputs[OURS])
    del outputs
    seconds = time_sides(calls, device=device, warmup=max(warmup - 1, 0), repeats=repeats)
    del calls
    result: dict[str, Any] = {"case": case.name, "unit": case.unit, "items": case.items, "repeats": repeats}
    for side in SIDES:
        median = statistics.median(seconds[side])
        result[side] = {"seconds": seconds[side], "median_s": median, "per_s": case.items / median}
    result["speed_ratio"] = result[OURS]["per_s"] / result[REFERENCE]["per_s"]
    if memory:
        for side in SIDES:
            result[side]["peak_extra_mib"] = peak_memory(case, side, device=device) / 2**20
        reference_mib = result[REFERENCE]["peak_extra_mib"]
        result["memory_ratio"] = result[OURS]["peak_extra_mib"] / reference_mib if reference_mib > 0 else None
    return result


def machine(device: str) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    described = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    kind = torch.device(device).type
    if kind != "cpu":
        described["accelerator"] = getattr(torch, kind).get_device_name()
    try:
        import open_clip

        described["open_clip"] = open_clip.__version__
    except ImportError:
        pass
    return described


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table: throughput of each side, speed ratio (ours / open_clip, above 1 is faster) and peak
    memory ratio (ours / open_clip, below 1 is leaner)."""
    lines = [
        "| case | unit | open_clip /s | open_mclip /s | speed ratio | open_clip MiB | open_mclip MiB | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mib = [r[side].get("peak_extra_mib") for side in SIDES]
        memory = [f"{m:.0f}" if m is not None else "-" for m in mib]
        ratio = f"{r['memory_ratio']:.2f}" if r.get("memory_ratio") is not None else "-"
        lines.append(
            f"| {r['case']} | {r['unit']} | {r[REFERENCE]['per_s']:.2f} | {r[OURS]['per_s']:.2f} | "
            f"{r['speed_ratio']:.2f} | {memory[0]} | {memory[1]} | {ratio} |"
        )
    return "\n".join(lines)
