"""Checkpoints: model, optimizer, scaler, step, epoch, config and RNG state, written atomically; loading one, and
ranking the ones written here (resume.py picks and restores one).

The model is saved in open_clip's key layout (`CLIP` or `CustomTextCLIP`, as open_clip builds the architecture), so
stock `open_clip.create_model(name, pretrained=file)` loads our checkpoints. A checkpoint is written to `NAME.tmp`,
flushed and renamed (a failed save removes the temporary file), never with non-finite weights; `index.json` beside
the checkpoints records each one's progress, so `--resume latest` ranks them without loading them. Files load with
`torch.load(weights_only=True)`: they hold tensors, numbers, strings and containers only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from open_mclip.convert import from_open_clip, to_open_clip
from open_mclip.open_clip_schema import open_clip_layout, to_open_clip_config

from .config import TrainConfig
from .devices import Device
from .distributed import World
from .divergence import GUARD_TOTALS, DivergenceGuard
from .rng import rng_state
from .stepper import Stepper
from .train import LoopState
from .wrap import unwrap

log = logging.getLogger(__name__)

NUMBERED = re.compile(r"^(epoch|step)_(\d+)\.pt$")
LATEST = "epoch_latest.pt"
INDEX = "index.json"  # {name: {"epoch", "epoch_step", "step", "size", "mtime_ns"}} of the checkpoints written here


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run; the message names the file and what to do."""


@dataclass(frozen=True, order=True)
class Progress:
    """How far a checkpoint is: epochs done, batches of the next epoch done, optimizer steps (-1: unknown, as in
    open_clip_train's checkpoints). Ordered, so the newest checkpoint is the largest."""

    epoch: int
    epoch_step: int = 0
    step: int = -1

    @classmethod
    def of(cls, state: dict[str, Any]) -> Progress:
        return cls(int(state["epoch"]), int(state.get("epoch_step", 0)), int(state.get("step", -1)))


# ------------------------------------------------------------------------------------------------- writing


def to_cpu(value: Any) -> Any:
    """Every tensor in a nested state moved to the CPU and contiguous (channels-last weights too), so a checkpoint
    saved on any device, in any layout, loads on any other."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def open_clip_layout_of(model: nn.Module) -> str:
    """The key layout open_clip builds for the model's architecture; our names are its CustomTextCLIP names, the
    layout kept for architectures open_clip cannot express."""
    try:
        return open_clip_layout(to_open_clip_config(model.cfg))
    except (ValueError, AttributeError):
        return "custom_text"


def optimizer_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """The parameter names of each optimizer group, in order: a resume maps the moments by name."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def build_state(
    *,
    model: nn.Module,
    stepper: Stepper,
    state: LoopState,
    config: TrainConfig,
    device: Device | None = None,
    guard: DivergenceGuard | None = None,
) -> dict[str, Any]:
    """Everything a resume needs, in open_clip's checkpoint keys (state_dict, optimizer, scaler, epoch) and ours;
    with `guard`, its counts of skipped steps so far (a resumed run's totals continue from them)."""
    bare = unwrap(model)
    return {
        **({GUARD_TOTALS: guard.totals_now()} if guard is not None else {}),
        "state_dict": to_open_clip(to_cpu(bare.state_dict()), layout=open_clip_layout_of(bare)),
        **to_cpu(stepper.state_dict()),  # "optimizer", "scaler"
        "optimizer_names": optimizer_names(bare, stepper.optimizer),
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


def non_finite(weights: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `state` to `path` through a temporary file, fsync and a rename; a failed write removes the temporary
    file and raises an OSError that names the checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = _os_error_in(err)  # torch's zip writer turns ENOSPC into a RuntimeError ("unexpected pos")
        if cause is not None:
            raise OSError(cause.errno, f"could not write checkpoint {path}: {cause.strerror or cause}") from err
        raise
    log.info("saved checkpoint %s (epoch %d, step %d)", path, state["epoch"], state["step"])


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError `err` is, or was raised while handling (its __cause__/__context__ chain), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_index(folder: str | os.PathLike) -> dict[str, dict[str, int]]:
    """The checkpoint index of `folder` ({} when there is none or it does not parse)."""
    try:
        index = json.loads((Path(folder) / INDEX).read_text(encoding="utf-8"))
        return {name: dict(entry) for name, entry in index.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


class CheckpointWriter:
    """Decides when and under which names to save the run's state; with --delete-previous-checkpoint removes the
    older numbered checkpoints after each good save, those of earlier runs of the folder included."""

    def __init__(
        self,
        folder: str | os.PathLike,
        config: TrainConfig,
        *,
        model: nn.Module,
        stepper: Stepper,
        world: World,
        device: Device | None = None,
        guard: DivergenceGuard | None = None,
    ) -> None:
        """Saves what `config.checkpoint` asks for (rank 0 only), each state carrying `config`, the RNG states and
        the `guard`'s counts."""
        self.folder, self.cfg, self.is_master = Path(folder), config.checkpoint, world.is_master
        self._parts = {"model": model, "stepper": stepper, "config": config, "device": device, "guard": guard}
        if self.is_master:
            for stale in self.folder.glob("*.pt.tmp"):  # left by a run killed while saving
                log.info("removing %s, the partial save of an interrupted run", stale)
                stale.unlink(missing_ok=True)

    def _save(self, state: dict[str, Any], name: str) -> bool:
        """Write `state` as `name` unless its weights are not finite; index it. Returns whether it was written."""
        bad = non_finite(state["state_dict"])
        if bad:
            newest = latest_checkpoint(self.folder)
            log.error(
                "not saving %s: %d weight tensor(s) are not finite (%s); the last good checkpoint is %s",
                name,
                len(bad),
                ", ".join(bad[:5]),
                newest or "none",
            )
            return False
        path = self.folder / name
        save_atomic(state, path)
        st = path.stat()
        index = read_index(self.folder)
        index[name] = {**dataclasses.asdict(Progress.of(state)), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        _write_json_atomic(self.folder / INDEX, index)
        return True

    def _write(self, state: dict[str, Any], name: str) -> None:
        if self._save(state, name) and self.cfg.delete_previous_checkpoint:
            self._delete_older(Progress.of(state), keep=name)

    def _delete_older(self, progress: Progress, *, keep: str) -> None:
        """Remove the numbered checkpoints that are not newer than the one just written."""
        index = read_index(self.folder)
        for candidate in local_candidates(self.folder):
            name = candidate.path.name
            if name not in (keep, LATEST) and NUMBERED.match(name) and candidate.progress <= progress:
                candidate.path.unlink(missing_ok=True)
                index.pop(name, None)
                log.info("deleted the previous checkpoint %s", candidate.path)
        _write_json_atomic(self.folder / INDEX, index)

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
            self._save(saved or build_state(state=state, **self._parts), LATEST)


# ------------------------------------------------------------------------------------------------- reading


def failure_reason(err: Exception) -> str:
    """What went wrong reading a checkpoint, in a line, without torch's advice to load it with weights_only=False
    (unsafe for a file of unknown origin)."""
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"it holds Python objects beyond tensors ({found.group(1)}), and checkpoints are read without running "
            "their code; save the model's state_dict() instead"
        )
    if "central directory" in text or "PytorchStreamReader" in text or isinstance(err, EOFError):
        return "it is truncated or corrupt (the archive is incomplete)"
    return f"it is not a PyTorch checkpoint ({type(err).__name__})"


def load(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at `path` (weights only, on the CPU); `mmap` maps the tensors instead of reading them (cheap:
    for the metadata). A missing, unreadable, truncated or foreign file raises CheckpointError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist; check --resume (or use --resume latest)")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: it is empty (0 bytes)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError... by kind of damage
        raise CheckpointError(f"cannot read checkpoint {path}: {failure_reason(err)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"cannot read checkpoint {path}: it holds a {type(obj).__name__}, not a state dict")
    return obj


def model_state(saved: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint (ours in either layout, open_clip_train's, or a bare state dict) under our
    names."""
    weights = saved["state_dict"] if isinstance(saved.get("state_dict"), dict) else saved
    return from_open_clip(weights)


@dataclass(frozen=True)
class Candidate:
    """A checkpoint `--resume latest` may pick: a local `path`, or `remote` (a path relative to the remote root)."""

    progress: Progress
    path: Path
    remote: str | None = None


def local_candidates(folder: str | os.PathLike) -> list[Candidate]:
    """The checkpoints of `folder`, newest first. Progress comes from the index where the file is the one indexed
    (same size and mtime), else from the file's metadata read through mmap (no weights are read); a file that does
    not read is left out with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    index, found = read_index(folder), []
    for path in folder.iterdir():
        if not (NUMBERED.match(path.name) or path.name == LATEST):
            continue
        entry, st = index.get(path.name), path.stat()
        if entry and (entry.get("size"), entry.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
            progress = Progress(entry["epoch"], entry["epoch_step"], entry["step"])
        else:
            try:
                progress = Progress.of(load(path, mmap=True))
            except (CheckpointError, KeyError, TypeError, ValueError) as err:
                log.warning("skipping %s: %s", path, err)
                continue
        found.append((progress, st.st_mtime_ns, Candidate(progress, path)))
    return [c for _, _, c in sorted(found, key=lambda item: item[:2], reverse=True)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The local checkpoint with the most progress in `folder` (temporary files are ignored), without loading it."""
    candidates = local_candidates(folder)
    return candidates[0].path if candidates else None


# ------------------------------------------------------------------------------------------------- resume
