"""Logging sinks: console and `out.log` (through `logging`), TensorBoard scalars, and `metrics.jsonl`.

The loop emits a dict of metrics; the sinks decide how to show it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

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

    def __init__(self, run_dir: Path | None, *, tensorboard: bool):
        self.run_dir = run_dir
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if run_dir is not None else None
        self.writer = None
        if tensorboard and run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, prefix: str, metrics: dict[str, float], *, step: int, epoch: int) -> None:
        if self.run_dir is None:
            return
        shown = " | ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items())
        log.info("%s epoch %d step %d | %s", prefix, epoch, step, shown)
        self.jsonl.write(json.dumps({"split": prefix, "epoch": epoch, "step": step, **metrics}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.writer is not None:
            self.writer.close()


def write_params(path: Path, config) -> None:
    """`params.txt`: one `group.name: value` line per setting, as open_clip writes its params."""
    lines = []
    for group in dataclasses.fields(config):
        for name, value in sorted(dataclasses.asdict(getattr(config, group.name)).items()):
            lines.append(f"{group.name}.{name}: {value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
