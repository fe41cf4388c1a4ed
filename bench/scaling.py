"""Scaling curves: how time and peak memory grow with the work, open_clip beside open_mclip in one run.

    python -m bench.scaling loss            # CLIP loss fwd+bwd, one process, batch 1k ... 32k
    python -m bench.scaling loss-2proc      # the same with gather-with-grad over 2 gloo processes
    python -m bench.scaling zero-shot       # classifier from templates + scoring, 10 / 100 / 1000 classes
    python -m bench.scaling retrieval       # recall@k image<->text over 1k / 10k / 100k embedding pairs

Each size runs as bench/harness.py runs a case: both sides checked equal, timed in alternation, peak memory per
side alone in a fresh process. Before a size, each side's peak is predicted from its peak at the size before
(growing as the sweep's exponent says); a side whose prediction exceeds `--budget-gib` or the memory the machine
has free is not run at that size, and the reason is recorded. A size only ours fits is measured alone in one
fresh process (one call, timed and measured). Results go to bench/results/scaling-<sweep>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cases
from bench.harness import OURS, REFERENCE, SIDES, Case, _peak_extra_bytes, build, machine, run_case

GIB = 2**30


@dataclass(frozen=True)
class Sweep:
    """Sizes of one kind of work; `growth[side]` is the exponent its peak memory grows with (N^2: an N x N matrix)."""

    name: str
    unit: str
    sizes: tuple[int, ...]
    growth: dict[str, float]
    repeats: int = 5


SWEEPS = {
    "loss": Sweep("loss", "batch", (1024, 2048, 4096, 8192, 16384, 32768), {REFERENCE: 2, OURS: 2}, repeats=3),
    "loss-2proc": Sweep(
        "loss-2proc", "global batch", (1024, 2048, 4096, 8192, 16384, 32768), {REFERENCE: 2, OURS: 2}, repeats=3
    ),
    "zero-shot": Sweep("zero-shot", "classes", (10, 100, 1000), {REFERENCE: 1, OURS: 1}, repeats=3),
    "retrieval": Sweep("retrieval", "pairs", (1000, 10_000, 100_000), {REFERENCE: 2, OURS: 1}, repeats=3),
}


def case_for(sweep: str, size: int, *, device: str) -> Case:
    """The harness case of one size of a one-process sweep."""
    if sweep == "loss":
        kwargs = {"kind": "clip", "batch_size": size, "dim": 512, "device": device}
        return Case(f"clip loss b{size}", "bench.cases:contrastive_loss", kwargs, size, "samples", cases.close_fp32)
    if sweep == "zero-shot":
        kwargs = {"classes": size, "templates": 2, "device": device}
        return Case(f"zero-shot {size} classes", "bench.scaling_cases:zero_shot", kwargs, size, "classes", _same_scores)
    if sweep == "retrieval":
        kwargs = {"pairs": size, "device": device}
        return Case(f"retrieval {size} pairs", "bench.scaling_cases:retrieval", kwargs, size, "pairs", cases.same)
    raise ValueError(f"sweep {sweep!r} is not one of {sorted(SWEEPS)}")


def _same_scores(reference, ours) -> None:
    """Classifier entries equal to float32 rounding, top-1/top-5 hit counts exactly equal."""
    cases.close_fp32(reference[:-2], ours[:-2])
    cases.same(reference[-2:], ours[-2:])


def available_bytes() -> int:
    """MemAvailable of /proc/meminfo: what the machine can still give without swapping."""
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def _solo_child(case: Case, side: str, device: str, queue: multiprocessing.Queue) -> None:
    try:
        call = build(case, (side,))[side]
        start = time.perf_counter()
        peak = _peak_extra_bytes(call, device)
        queue.put((time.perf_counter() - start, peak))
    except BaseException as error:
        queue.put(f"{type(error).__name__}: {error}")


def solo(case: Case, side: str, *, device: str) -> dict[str, Any]:
    """One call of `side` alone in a fresh process, timed and measured for peak memory (a size the other side
    cannot run, so there is nothing to alternate with; the one call includes first-call costs)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_solo_child, args=(case, side, device, queue))
    child.start()
    result = queue.get()
    child.join()
    if isinstance(result, str):
        raise RuntimeError(f"{case.name}: {side} alone failed: {result}")
    seconds, peak = result
    return {"seconds": [seconds], "median_s": seconds, "peak_extra_mib": peak / 2**20}


def _measure(sweep: Sweep, size: int, sides: tuple[str, ...], *, device: str, repeats: int) -> dict[str, Any]:
    """Per side: seconds, median and peak extra MiB at one size."""
    if sweep.name == "loss-2proc":
        from bench.scaling_dist import distributed_loss

        measured = distributed_loss(batch=size, sides=sides, repeats=repeats)
        return {
            side: {**m, "median_s": statistics.median(m["seconds"]), "peak_extra_mib": m["peak_extra_bytes"] / 2**20}
            for side, m in measured.items()
        }
    case = case_for(sweep.name, size, device=device)
    if sides == SIDES:
        result = run_case(case, device=device, repeats=repeats)
        return {side: result[side] for side in SIDES}
    return {side: solo(case, side, device=device) for side in sides}


def _predicted_mib(sweep: Sweep, side: str, size: int, rows: list[dict]) -> float | None:
    previous = [(r["size"], r[side]["peak_extra_mib"]) for r in rows if "peak_extra_mib" in r.get(side, {})]
    if not previous:
        return None
    last_size, last_mib = previous[-1]
    return last_mib * (size / last_size) ** sweep.growth[side]


def _skip_reason(sweep: Sweep, side: str, size: int, rows: list[dict], budget_gib: float) -> str | None:
    """Why `side` is not run at `size` (None: it is): a side skipped at a smaller size is skipped here too."""
    if any("skipped" in r.get(side, {}) for r in rows):
        return "skipped at a smaller size"
    predicted = _predicted_mib(sweep, side, size, rows)
    if predicted is None:
        return None
    limit_mib = min(budget_gib * 1024, (available_bytes() - GIB) / 2**20)
    if predicted > limit_mib:
        last = [r for r in rows if "peak_extra_mib" in r.get(side, {})][-1]
        return (
            f"predicted {predicted / 1024:.1f} GiB (measured {last[side]['peak_extra_mib'] / 1024:.2f} GiB at "
            f"{last['size']}, growing as size^{sweep.growth[side]:g}) exceeds the {limit_mib / 1024:.1f} GiB limit "
            f"(--budget-gib {budget_gib:g}, {available_bytes() / GIB:.1f} GiB available)"
        )
    return None


def _load_average() -> list[float]:
    with open("/proc/loadavg") as load:
        return [float(x) for x in load.read().split()[:3]]


def run_sweep(
    sweep: Sweep,
    *,
    sizes: tuple[int, ...],
    device: str,
    repeats: int,
    budget_gib: float,
    rows: list[dict[str, Any]] | None = None,
    save=None,
) -> list[dict[str, Any]]:
    """Every size of the sweep: per side its timings and peak memory, or why it was not run; then the ratios.
    `rows` are earlier sizes (they feed the memory prediction); `save(rows)` is called after each size."""
    rows = list(rows or [])
    for size in sizes:
        row: dict[str, Any] = {"size": size, "repeats": repeats, "load_before": _load_average()}
        earlier = [r for r in rows if r["size"] < size]
        reasons = {side: _skip_reason(sweep, side, size, earlier, budget_gib) for side in SIDES}
        sides = tuple(side for side in SIDES if reasons[side] is None)
        started = time.perf_counter()
        row.update({side: {"skipped": reason} for side, reason in reasons.items() if reason is not None})
        if sides:
            row.update(_measure(sweep, size, sides, device=device, repeats=repeats))
            row["method"] = "alternating" if sides == SIDES else "alone, one call"
        row["wall_s"], row["load_after"] = time.perf_counter() - started, _load_average()
        if sides == SIDES:
            row["speed_ratio"] = row[REFERENCE]["median_s"] / row[OURS]["median_s"]
            row["memory_ratio"] = row[OURS]["peak_extra_mib"] / max(row[REFERENCE]["peak_extra_mib"], 1e-9)
        rows = sorted([r for r in rows if r["size"] != size] + [row], key=lambda r: r["size"])
        print(_row_line(sweep, row), flush=True)
        if save is not None:
            save(rows)
    return rows


def _row_line(sweep: Sweep, row: dict[str, Any]) -> str:
    parts = [f"{sweep.name} {row['size']}:"]
    for side in SIDES:
        data = row.get(side, {})
        if "median_s" in data:
            parts.append(f"{side} {data['median_s']:.3f} s {data['peak_extra_mib']:.0f} MiB;")
        else:
            parts.append(f"{side} not run ({data.get('skipped')});")
    if "speed_ratio" in row:
        parts.append(f"speed ratio {row['speed_ratio']:.2f}, memory ratio {row['memory_ratio']:.2f}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", choices=sorted(SWEEPS))
    parser.add_argument("--sizes", default="", help="comma-separated sizes instead of the sweep's own")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per side (default: the sweep's)")
    parser.add_argument("--budget-gib", type=float, default=6.0, help="largest predicted peak to run (default 6)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/scaling-<sweep>.json)")
    parser.add_argument("--append", action="store_true", help="keep the other sizes already in --out")
    args = parser.parse_args(argv)
    sweep = SWEEPS[args.sweep]
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else sweep.sizes
    repeats = args.repeats or sweep.repeats
    out = args.out or Path(__file__).parent / "results" / f"scaling-{sweep.name}.json"
    command = ["python", "-m", "bench.scaling", *(argv if argv is not None else sys.argv[1:])]
    earlier = json.loads(out.read_text()) if args.append and out.exists() else {"rows": [], "commands": []}
    report = {
        "sweep": sweep.name,
        "unit": sweep.unit,
        "machine": machine(args.device),
        "commands": [*earlier["commands"], command],
        "budget_gib": args.budget_gib,
        "rows": earlier["rows"],
    }

    def save(rows: list[dict[str, Any]]) -> None:
        report["rows"] = rows
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))

    timing = {"device": args.device, "repeats": repeats, "budget_gib": args.budget_gib}
    run_sweep(sweep, sizes=sizes, **timing, rows=earlier["rows"], save=save)
    return report


if __name__ == "__main__":
    main()
