"""The scaling curves as a Markdown table and a log-log PNG, from the JSON that bench/scaling.py wrote.

    python -m bench.scaling_report                  # bench/results/scaling-*.json -> docs/img/scaling.png + tables

matplotlib is imported only to plot (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.harness import OURS, REFERENCE, SIDES

RESULTS = Path(__file__).parent / "results"
ORDER = ("loss", "loss-2proc", "zero-shot", "retrieval")
TITLES = {
    "loss": "CLIP loss fwd+bwd, 1 process",
    "loss-2proc": "CLIP loss, gather-with-grad, 2 gloo processes",
    "zero-shot": "zero-shot: classifier + scoring",
    "retrieval": "retrieval recall@k",
}


def load(folder: Path) -> list[dict[str, Any]]:
    """The reports of the sweeps found in `folder`, in ORDER."""
    reports = {}
    for path in sorted(folder.glob("scaling-*.json")):
        report = json.loads(path.read_text())
        reports[report["sweep"]] = report
    return [reports[name] for name in ORDER if name in reports]


def _cell(row: dict[str, Any], side: str) -> tuple[str, str]:
    data = row.get(side, {})
    if "median_s" not in data:
        return "not run", "not run"
    return f"{data['median_s']:.3g}", f"{data['peak_extra_mib']:.0f}"


def markdown(report: dict[str, Any]) -> str:
    """One sweep's table: seconds and peak MiB per side, ours / open_clip speed and memory ratios."""
    lines = [
        f"| {report['unit']} | open_clip s | open_mclip s | speed ratio | open_clip MiB | open_mclip MiB | "
        "memory ratio | load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        (ref_s, ref_mib), (our_s, our_mib) = _cell(row, REFERENCE), _cell(row, OURS)
        speed = f"{row['speed_ratio']:.2f}" if "speed_ratio" in row else "-"
        memory = f"{row['memory_ratio']:.2f}" if "memory_ratio" in row else "-"
        load = f"{row['load_before'][0]:.1f}-{row['load_after'][0]:.1f}"
        lines.append(f"| {row['size']:,} | {ref_s} | {our_s} | {speed} | {ref_mib} | {our_mib} | {memory} | {load} |")
    notes = [
        f"- {side} at {row['size']:,}: {row[side]['skipped']}"
        for row in report["rows"]
        for side in SIDES
        if "skipped" in row.get(side, {}) and row[side]["skipped"] != "skipped at a smaller size"
    ]
    alone = [f"{row['size']:,}" for row in report["rows"] if row.get("method") == "alone, one call"]
    if alone:
        notes.append(f"- measured alone (one call, in a fresh process): {', '.join(alone)}")
    return "\n".join(lines + ([""] + notes if notes else []))


def _short(size: int) -> str:
    return (
        f"{size // 1000}k" if size >= 1000 and size % 1000 == 0 else f"{size / 1024:g}k" if size >= 1024 else str(size)
    )


def _commands(report: dict[str, Any]) -> str:
    return "; ".join(f"`{' '.join(command)}`" for command in report["commands"])


def plot(reports: list[dict[str, Any]], out: Path) -> None:
    """Time (top row) and peak memory (bottom row) against size, log-log, both libraries per panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(2, len(reports), figsize=(4.2 * len(reports), 7), squeeze=False)
    styles = {REFERENCE: {"marker": "o", "color": "tab:gray"}, OURS: {"marker": "s", "color": "tab:blue"}}
    for column, report in enumerate(reports):
        for row_index, (key, label) in enumerate((("median_s", "seconds per call"), ("peak_extra_mib", "peak MiB"))):
            ax = axes[row_index][column]
            for side in SIDES:
                points = [(r["size"], r[side][key]) for r in report["rows"] if key in r.get(side, {})]
                if points:
                    ax.plot(*zip(*points, strict=True), label=side, **styles[side])
            ax.set_xscale("log")
            ax.set_yscale("log")
            sizes = [r["size"] for r in report["rows"]]
            ax.set_xticks(sizes, [_short(size) for size in sizes])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            skipped = [
                f"{side} {_short(r['size'])}" for r in report["rows"] for side in SIDES if "skipped" in r.get(side, {})
            ]
            if skipped and row_index == 1:
                ax.text(0.02, 0.98, "did not fit: " + ", ".join(skipped), transform=ax.transAxes, fontsize=7, va="top")
            ax.set_xlabel(report["unit"])
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            if row_index == 0:
                ax.set_title(TITLES.get(report["sweep"], report["sweep"]), fontsize=10)
            ax.legend(fontsize=8)
    cpu = reports[0]["machine"].get("cpu", "") if reports else ""
    figure.suptitle(f"open_mclip vs open_clip 3.3.0: scaling on {cpu} ({reports[0]['machine']['cores']} cores)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of scaling-*.json")
    parser.add_argument("--png", type=Path, default=Path(__file__).parent.parent / "docs" / "img" / "scaling.png")
    args = parser.parse_args(argv)
    reports = load(args.results)
    if not reports:
        parser.error(f"no scaling-*.json in {args.results}: run python -m bench.scaling <sweep> first")
    plot(reports, args.png)
    text = "\n\n".join(f"{TITLES[r['sweep']]} ({_commands(r)})\n\n{markdown(r)}" for r in reports)
    print(text)
    return text


if __name__ == "__main__":
    main()
