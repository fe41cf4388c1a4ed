"""Model FLOPs utilisation (MFU) for the benchmark cases: achieved FLOP/s against the device's measured bf16
matrix-product peak.

FLOPs are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` records the matrix products,
convolutions and attention of one call (forward and backward, as executed). A case's model FLOPs are the ones
open_clip's call executes (the full 77-token text context, as the model is defined); both sides' FLOP/s and MFU
use that same numerator, so their MFU ratio is their speed ratio, and ours doing less work (padding-free text)
shows as a higher MFU. What our call executes is reported beside it (`flops_executed`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.harness import OURS, REFERENCE, SIDES, Case, build, synchronize

# matrix side of the peak measurement: large enough to saturate the device, small enough for a CPU test
PEAK_SIZES = {"cpu": 1024, "cuda": 8192}


def matmul_peak(
    device: str, *, dtype: torch.dtype = torch.bfloat16, size: int | None = None, repeats: int = 5
) -> dict[str, Any]:
    """The best FLOP/s of `repeats` (size x size) @ (size x size) products in `dtype`: the peak MFU is taken
    against (2 size^3 FLOPs per product; a few products per timing so that launch costs vanish)."""
    kind = torch.device(device).type
    size = size or PEAK_SIZES.get(kind, 8192)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    products = 1 if kind == "cpu" else 10
    torch.matmul(a, b)  # warm-up: kernel selection, allocator
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(products):
            torch.matmul(a, b)
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / products)
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "best_s": best, "flop_per_s": 2 * size**3 / best}


def count_flops(call) -> int:
    """FLOPs one call executes (matrix products, convolutions, attention; forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


def case_flops(case: Case) -> dict[str, int]:
    """FLOPs of one call of each side of `case` (built afresh, after one warm-up call)."""
    calls = build(case, SIDES)
    counted = {}
    for side, call in calls.items():
        call()
        counted[side] = count_flops(call)
    return counted


def add_mfu(result: dict[str, Any], counted: dict[str, int], peak: dict[str, Any]) -> dict[str, Any]:
    """Put FLOPs, FLOP/s and MFU into a `run_case` result: model FLOPs are open_clip's count (see the module)."""
    model_flops = counted[REFERENCE]
    result["model_flops_per_call"] = model_flops
    result["flops_executed"] = dict(counted)
    result["peak"] = dict(peak)
    for side in SIDES:
        flop_per_s = model_flops / result[side]["median_s"]
        result[side]["flop_per_s"] = flop_per_s
        result[side]["mfu"] = flop_per_s / peak["flop_per_s"]
    return result


def mfu_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of the cases that have MFU: model GFLOPs per call, TFLOP/s and MFU of each side."""
    lines = [
        "| case | model GFLOP/call | ours executes | open_clip TFLOP/s | open_mclip TFLOP/s | open_clip MFU | "
        "open_mclip MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "model_flops_per_call" not in r:
            continue
        executed = r["flops_executed"][OURS] / max(r["model_flops_per_call"], 1)
        lines.append(
            f"| {r['case']} | {r['model_flops_per_call'] / 1e9:.1f} | {executed:.0%} | "
            f"{r[REFERENCE]['flop_per_s'] / 1e12:.3f} | {r[OURS]['flop_per_s'] / 1e12:.3f} | "
            f"{r[REFERENCE]['mfu']:.1%} | {r[OURS]['mfu']:.1%} |"
        )
    return "\n".join(lines)
