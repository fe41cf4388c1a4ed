"""Run open_clip_train's main() or ours on a fixed list of batches (test helper for test_learning_parity.py).

Usage: python learning_parity_driver.py PLAN.json, where the plan names the trainer ("open_clip" or "open_mclip"), a
folder of model configs to register, a file of batches (torch.save of a list of (images, texts)) and the runs, each
an argv and how many of the batches make its epoch. Only the data loading is replaced: each trainer's real main()
builds the model, optimizer, scheduler and loss from the argv and runs its own training loop on those batches. It
runs in its own process because open_clip's logging set-up changes every logger of the process it runs in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


class FixedLoader(list):
    """The batches in order, with the sizes both trainers read from a loader."""

    def __init__(self, batches: list) -> None:
        super().__init__(batches)
        self.num_batches = len(batches)
        self.num_samples = sum(len(images) for images, _ in batches)


class OpenClipData:
    """What open_clip_train's get_data returns for "train": a loader and set_epoch."""

    def __init__(self, batches: list) -> None:
        self.dataloader = FixedLoader(batches)

    def set_epoch(self, epoch: int) -> None:
        pass


def run_open_clip(argv: list[str], batches: list) -> None:
    import open_clip_train.main

    open_clip_train.main.get_data = lambda *args, **kwargs: {"train": OpenClipData(batches)}
    open_clip_train.main.main(argv)


def run_ours(argv: list[str], batches: list) -> None:
    import training.main
    from training.data.info import DataInfo, SkipCounter

    def get_data(*args, **kwargs) -> dict:
        loader = FixedLoader(batches)
        return {"train": DataInfo(loader, loader.num_samples, loader.num_batches, SkipCounter(max_workers=0))}

    training.main.get_data = get_data
    training.main.main(argv)


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    torch.set_num_threads(1)  # the two trainers run side by side
    if plan["trainer"] == "open_clip":
        import open_clip

        open_clip.add_model_config(plan["config_dir"])
    else:
        import open_mclip

        open_mclip.add_model_config(plan["config_dir"])
    batches = torch.load(plan["batches"], weights_only=True)
    run = run_open_clip if plan["trainer"] == "open_clip" else run_ours
    for spec in plan["runs"]:
        run(spec["argv"], batches[: spec["num_batches"]])


if __name__ == "__main__":
    main(sys.argv[1])
