"""Checkpoints: model, optimizer, scaler, step, epoch, config and RNG state, written atomically.

A checkpoint is written to `NAME.tmp`, flushed to disk and renamed, so a run killed while saving leaves the
previous checkpoints intact and never a truncated `.pt`. `--resume latest` picks the newest complete one.
Files load with `torch.load(weights_only=True)`: they hold tensors, numbers, strings and containers only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_STEP_FILE = re.compile(r"^(epoch|step)_(\d+)\.pt$")
LATEST = "epoch_latest.pt"


def rng_state(device=None) -> dict[str, Any]:
    """Python, NumPy, torch CPU and the device's generator states as tensors/ints (weights_only-loadable)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "device": to_cpu(device.rng_state()) if device is not None else {},
    }


def set_rng_state(state: dict[str, Any], device=None) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if device is not None:
        device.set_rng_state(state.get("device", {}))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The CLIP module inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def to_cpu(value: Any) -> Any:
    """Every tensor in a nested state moved to the CPU, so a checkpoint saved on any device loads on any other."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def build_state(*, model, optimizer, scaler, epoch: int, step: int, epoch_step: int, config,
                device=None) -> dict[str, Any]:  # fmt: skip
    return {
        "state_dict": to_cpu(unwrap(model).state_dict()),
        "optimizer": to_cpu(optimizer.state_dict()),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,  # epochs completed (the next epoch to run), open_clip's meaning
        "step": step,  # optimizer steps completed
        "epoch_step": epoch_step,  # batches of `epoch` already consumed (0 at an epoch boundary)
        "config": _plain(dataclasses.asdict(config)),
        "rng": rng_state(device),
    }


def _plain(value: Any) -> Any:
    """Config values as JSON-like primitives (weights_only loads them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `state` to `path` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    log.info("saved checkpoint %s (epoch %d, step %d)", path, state["epoch"], state["step"])


def load(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the most optimizer steps in `folder` (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = [p for p in folder.iterdir() if _STEP_FILE.match(p.name) or p.name == LATEST]
    best, best_key = None, None
    for path in candidates:
        try:
            state = load(path)
        except Exception as err:  # a file that does not load is not a checkpoint to resume from
            log.warning("skipping unreadable checkpoint %s: %s", path, err)
            continue
        key = (state["step"], path.stat().st_mtime)
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best


class CheckpointWriter:
    """Decides when and under which names to save, and removes superseded files when asked."""

    def __init__(self, folder: str | os.PathLike, cfg, *, is_master: bool):
        self.folder, self.cfg, self.is_master = Path(folder), cfg, is_master
        self._previous: Path | None = None

    def _write(self, state: dict[str, Any], name: str) -> None:
        path = self.folder / name
        save_atomic(state, path)
        if self.cfg.delete_previous_checkpoint and self._previous is not None and self._previous != path:
            self._previous.unlink(missing_ok=True)
        self._previous = path

    def after_step(self, make_state, *, step: int) -> None:
        every = self.cfg.save_every_n_steps
        if self.is_master and every and step % every == 0:
            self._write(make_state(), f"step_{step}.pt")

    def after_epoch(self, make_state, *, epoch: int, last: bool) -> None:
        """`epoch` = epochs completed so far."""
        if not self.is_master:
            return
        state = None
        if self.cfg.save_frequency > 0 and (epoch % self.cfg.save_frequency == 0 or last):
            state = make_state()
            self._write(state, f"epoch_{epoch}.pt")
        if self.cfg.save_most_recent:
            save_atomic(state or make_state(), self.folder / LATEST)
