"""The two trainers side by side: `open_clip_train.main` and our `training.main` on the same data and flags.

Both read one CSV of real photos (JPEG files, captions in 8 languages) with the same model, batch size, precision,
workers and learning rate; both log every step. The runs alternate (theirs, ours, ours, theirs, ...), and each run's
steady-state throughput is the median of its per-step samples/s after the first `--skip` steps (start-up, first
data-loader fill). This measures what the benchmarks of bench.run leave out: data loading and the loop itself.

    python -m bench.trainers --model ViT-S-32 --batch-size 32 --steps 12 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.cases import CAPTIONS, real_photos
from bench.harness import OURS, REFERENCE, SIDES, machine

MODULES = {REFERENCE: "open_clip_train.main", OURS: "training.main"}
_OPEN_CLIP_RATE = re.compile(r"Batch \(t\): [\d.]+, ([\d.]+)/s, ")


def write_csv(folder: Path, rows: int) -> Path:
    """A tab-separated file of `rows` (JPEG path, caption) pairs over the real photos, saved at their own size."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, photo in enumerate(real_photos(8)):
        path = folder / f"photo{index}.jpg"
        photo.save(path, quality=90)
        paths.append(path)
    lines = ["filepath\ttitle"]
    lines += [f"{paths[i % len(paths)]}\t{CAPTIONS[i % len(CAPTIONS)]} {i}" for i in range(rows)]
    table = folder / "train.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def command(side: str, *, table: Path, logs: Path, name: str, args: argparse.Namespace) -> list[str]:
    """The same command line for both trainers (open_clip's flag names are ours too)."""
    flags = (
        f"--dataset-type csv --csv-img-key filepath --csv-caption-key title --model {args.model} "
        f"--batch-size {args.batch_size} --epochs 1 --lr 1e-4 --warmup 2 --workers {args.workers} "
        f"--precision {args.precision} --device {args.device} --save-frequency 0 --log-every-n-steps 1 --seed 0"
    )
    paths = ["--train-data", str(table), "--logs", str(logs), "--name", name]  # paths may hold spaces
    return [sys.executable, "-m", MODULES[side], *flags.split(), *paths]


def step_rates(side: str, run_dir: Path) -> list[float]:
    """Per-step samples/s from a finished run's own log."""
    if side == REFERENCE:
        return [float(m) for m in _OPEN_CLIP_RATE.findall((run_dir / "out.log").read_text())]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["samples_per_s"] for row in rows if row.get("split") == "train"]


def run_once(side: str, *, table: Path, logs: Path, name: str, args: argparse.Namespace) -> list[float]:
    """Train one epoch with one trainer and return its per-step throughput."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    argv = command(side, table=table, logs=logs, name=name, args=args)
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{MODULES[side]} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rates = step_rates(side, logs / name)
    if len(rates) != args.steps:
        raise RuntimeError(f"{MODULES[side]} logged {len(rates)} steps, expected {args.steps}")
    return rates


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-S-32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="training steps per run (default: 12)")
    parser.add_argument("--skip", type=int, default=3, help="first steps of each run left out (default: 3)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per trainer, alternating (default: 2)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.skip >= args.steps:
        parser.error(f"--skip {args.skip} leaves no step of --steps {args.steps} to measure")

    runs: dict[str, list[list[float]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="bench-trainers-") as scratch:
        table = write_csv(Path(scratch) / "data", args.steps * args.batch_size)
        for round_index in range(args.rounds):
            order = SIDES if round_index % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                name = f"{side}-{round_index}"
                runs[side].append(run_once(side, table=table, logs=Path(scratch) / "logs", name=name, args=args))
                median = statistics.median(runs[side][-1][args.skip :])
                print(f"{side} round {round_index}: {median:.2f} samples/s", flush=True)
    per_s = {side: statistics.median([r for run in runs[side] for r in run[args.skip :]]) for side in SIDES}
    result = {
        "case": f"trainer {args.model} b{args.batch_size} {args.precision}, {args.workers} worker(s), CSV of JPEGs",
        "steps": args.steps,
        "skip": args.skip,
        "rounds": args.rounds,
        "runs": runs,
        REFERENCE: {"per_s": per_s[REFERENCE]},
        OURS: {"per_s": per_s[OURS]},
        "speed_ratio": per_s[OURS] / per_s[REFERENCE],
    }
    speeds = f"open_clip {per_s[REFERENCE]:.2f}/s, open_mclip {per_s[OURS]:.2f}/s"
    print(f"{result['case']}: {speeds}, speed ratio {result['speed_ratio']:.2f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"machine": machine(args.device), "command": sys.argv, "result": result}, indent=1)
        )
    return result


if __name__ == "__main__":
    main()
