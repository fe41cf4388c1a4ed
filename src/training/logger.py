"""Logging sinks: console and `out.log` (through `logging`), TensorBoard scalars, `metrics.jsonl`, and Weights &
Biases (`WandbSink`).

The loop emits a dict of metrics; the sinks decide how to show it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from open_mclip.extras import import_extra

log = logging.getLogger(__name__)


def log_file(folder: Path, *, rank: int, local_rank: int, local: bool = False) -> Path | None:
    """This process's log file, as open_clip names them: `out.log` on rank 0; with --log-local, `out-RANK` on the
    first process of every node (each node's disk then holds its own ranks' story)."""
    if local:
        return folder / f"out-{rank}" if local_rank == 0 else None
    return folder / "out.log" if rank == 0 else None


def setup_logging(log_file: str | Path | None, *, debug: bool = False, rank: int = 0) -> None:
    """Console for every rank (prefixed with the rank), and `log_file` where `log_file()` gives one."""
    level = logging.DEBUG if debug else logging.INFO
    fmt = logging.Formatter(f"%(asctime)s | rank {rank} | %(levelname)s | %(message)s", "%Y-%m-%d,%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    root.addHandler(console)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)


class MetricsLogger:
    """Writes metric dicts to the console, `metrics.jsonl` and (optionally) TensorBoard; rank 0 only."""

    def __init__(self, run_dir: Path | None, *, tensorboard: bool, wandb: WandbSink | None = None):
        self.run_dir, self.wandb = run_dir, wandb
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if run_dir is not None else None
        self.writer = None
        if tensorboard and run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, prefix: str, metrics: dict[str, float], *, step: int, epoch: int, note: str = "") -> None:
        """`note` goes on the console line only (the training progress), not into the metrics."""
        if self.run_dir is None:
            return
        shown = " | ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items())
        log.info("%s epoch %d step %d%s | %s", prefix, epoch, step, f" {note}" if note else "", shown)
        self.jsonl.write(json.dumps({"split": prefix, "epoch": epoch, "step": step, **metrics}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log(prefix, metrics, step=step, epoch=epoch)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.close()


def write_params(path: Path, config) -> None:
    """`params.txt`: one `group.name: value` line per setting, as open_clip writes its params."""
    lines = []
    for group in dataclasses.fields(config):
        for name, value in sorted(dataclasses.asdict(getattr(config, group.name)).items()):
            lines.append(f"{group.name}.{name}: {value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class WandbSink:
    """Weights & Biases (`--report-to wandb`, the `wandb` extra): every split's numbers as `split/name` at the
    optimizer step they belong to. The run id is the run's name, as open_clip_train's, so a resumed run (ours, or an
    open_clip run continued here under its `--name`) appends to the same W&B run."""

    def __init__(self, *, name: str, project: str, notes: str, config: dict[str, Any], resume: bool, folder: Path):
        """`folder`: the run folder, where W&B keeps its files unless WANDB_DIR says otherwise."""
        wandb = import_extra("wandb", extra="wandb", needed_for="--report-to wandb")
        self.run = wandb.init(
            project=project,
            name=name,
            id=wandb_run_id(name),
            notes=notes or None,
            resume="allow" if resume else None,
            config=config,
            dir=None if os.environ.get("WANDB_DIR") else str(folder),
        )
        params = folder / "params.txt"
        if params.exists():
            self.run.save(str(params), base_path=str(folder), policy="now")
        self._step = 0  # the last training step: evaluations are logged there, as open_clip_train logs them

    def log(self, prefix: str, metrics: dict[str, Any], *, step: int, epoch: int) -> None:
        if prefix == "train":
            self._step = step
        values = {f"{prefix}/{key}": value for key, value in _numbers(metrics).items()}
        self.run.log({**values, "epoch": epoch}, step=self._step)

    def close(self) -> None:
        self.run.finish()


def wandb_run_id(name: str) -> str:
    """The run's name as a W&B run id (which cannot hold / \\ # ? % :)."""
    return re.sub(r"[/\\#?%:]", "-", name)


def _numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric entries of `metrics`, nested dicts (per-language results) flattened as `outer/inner`."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out
