"""A PNG of the training loss and the evaluation curves, from the run's `metrics.jsonl`."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def plot_curves(metrics_file: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_file).read_text(encoding="utf-8").splitlines() if line]
    train = [r for r in rows if r["split"] == "train"]
    accuracy = defaultdict(list)  # metric -> [(epoch, value)]
    for r in rows:
        if r["split"] in ("zeroshot", "imagenet"):
            prefix = "imagenet " if r["split"] == "imagenet" else ""
            for key, value in r.items():
                if key.endswith("_top1"):
                    accuracy[prefix + key[: -len("_top1")]].append((r["epoch"], value))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["step"] for r in train], [r["loss"] for r in train])
    left.set(xlabel="optimizer step", ylabel="contrastive loss", title="training loss")
    for lang, points in sorted(accuracy.items()):
        right.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=lang)
    right.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="zero-shot accuracy per language")
    if accuracy:
        right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
