"""Checkpoints: model, optimizer, scaler, step, epoch, config and RNG state, written atomically.

A checkpoint is written to `NAME.tmp`, flushed to disk and renamed, so a run killed while saving leaves the
previous checkpoints intact and never a truncated `.pt`. `resume()` loads one (`--resume latest`: the newest
complete one) and returns the loop state.
Files load with `torch.load(weights_only=True)`: they hold tensors, numbers, strings and containers only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .devices import Device
from .distributed import World, broadcast_object
from .rng import rng_state
from .stepper import Stepper
from .train import LoopState
from .wrap import unwrap

log = logging.getLogger(__name__)

_STEP_FILE = re.compile(r"^(epoch|step)_(\d+)\.pt$")
LATEST = "epoch_latest.pt"


def to_cpu(value: Any) -> Any:
    """Every tensor in a nested state moved to the CPU, so a checkpoint saved on any device loads on any other."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def build_state(
    *, model: nn.Module, stepper: Stepper, state: LoopState, config: TrainConfig, device: Device | None = None
) -> dict[str, Any]:
    """Everything a resume needs, in open_clip's checkpoint keys (state_dict, optimizer, scaler, epoch) and ours."""
    return {
        "state_dict": to_cpu(unwrap(model).state_dict()),
        **to_cpu(stepper.state_dict()),  # "optimizer", "scaler"
        "epoch": state.epoch,  # epochs completed (the next epoch to run), open_clip's meaning
        "step": state.step,  # optimizer steps completed
        "epoch_step": state.epoch_step,  # batches of `epoch` already consumed (0 at an epoch boundary)
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


def resume(spec: str | None, *, folder: Path, world: World, model: nn.Module, stepper: Stepper) -> LoopState:
    """The loop state to start from, with `model` and `stepper` loaded from the checkpoint `spec` names: a file, or
    "latest" for the newest complete one in `folder` (fresh when there is none, or without `spec`)."""
    if spec == "latest":
        spec = broadcast_object(latest_checkpoint(folder), world)
        if spec is None:
            log.info("no checkpoint to resume from in %s: starting fresh", folder)
    if not spec:
        return LoopState()
    saved = load(spec)
    model.load_state_dict(saved["state_dict"])
    stepper.load_state_dict(saved)
    mid_epoch = saved["epoch_step"] > 0
    state = LoopState(
        epoch=saved["epoch"],
        step=saved["step"],
        epoch_step=saved["epoch_step"],
        resume_rng=saved["rng"] if mid_epoch else None,
    )
    log.info("resumed from %s: epoch %d, step %d", spec, state.epoch, state.step)
    return state


class CheckpointWriter:
    """Decides when and under which names to save the run's state, and removes superseded files when asked."""

    def __init__(
        self,
        folder: str | os.PathLike,
        config: TrainConfig,
        *,
        model: nn.Module,
        stepper: Stepper,
        world: World,
        device: Device | None = None,
    ) -> None:
        """Saves what `config.checkpoint` asks for (rank 0 only), each state carrying `config` and the RNG states."""
        self.folder, self.cfg, self.is_master = Path(folder), config.checkpoint, world.is_master
        self._parts = {"model": model, "stepper": stepper, "config": config, "device": device}
        self._previous: Path | None = None

    def _write(self, state: dict[str, Any], name: str) -> None:
        path = self.folder / name
        save_atomic(state, path)
        if self.cfg.delete_previous_checkpoint and self._previous is not None and self._previous != path:
            self._previous.unlink(missing_ok=True)
        self._previous = path

    def after_step(self, state: LoopState) -> None:
        every = self.cfg.save_every_n_steps
        if self.is_master and every and state.step % every == 0:
            self._write(build_state(state=state, **self._parts), f"step_{state.step}.pt")

    def after_epoch(self, state: LoopState, *, last: bool) -> None:
        """Called once `state.epoch` epochs are complete."""
        if not self.is_master:
            return
        saved = None
        if self.cfg.save_frequency > 0 and (state.epoch % self.cfg.save_frequency == 0 or last):
            saved = build_state(state=state, **self._parts)
            self._write(saved, f"epoch_{state.epoch}.pt")
        if self.cfg.save_most_recent:
            save_atomic(saved or build_state(state=state, **self._parts), self.folder / LATEST)
