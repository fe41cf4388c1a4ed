"""Checkpoints: model, optimizer, scaler, step, epoch, config and RNG state, written atomically; and resume.

The model is saved in open_clip's key layout (`CLIP` or `CustomTextCLIP`, as open_clip builds the architecture), so
stock `open_clip.create_model(name, pretrained=file)` loads our checkpoints; `resume()` reads ours in either layout
and open_clip_train's (`epoch`, `state_dict` with `module.` prefixes, `optimizer`, `scaler`, no `step`), remapping
the optimizer moments by parameter name. A checkpoint is written to `NAME.tmp`, flushed and renamed (a failed
save removes the temporary file), never with non-finite weights; `index.json` beside the checkpoints records each
one's progress, so `--resume latest` ranks them without loading them. Files load with
`torch.load(weights_only=True)`: they hold tensors, numbers, strings and containers only.
"""

from __future__ import annotations

import dataclasses
import io
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

from open_mclip.convert import from_open_clip, is_clip_layout, load_state_dict_strict, to_open_clip
from open_mclip.open_clip_schema import open_clip_layout, to_open_clip_config

from .config import TrainConfig
from .devices import Device
from .distributed import World, broadcast_object
from .remote import RemoteSync, fetch_url, read_bytes
from .rng import rng_state
from .stepper import Stepper
from .train import LoopState
from .wrap import unwrap

log = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^(epoch|step)_(\d+)\.pt$")
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
    """Every tensor in a nested state moved to the CPU, so a checkpoint saved on any device loads on any other."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
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
    *, model: nn.Module, stepper: Stepper, state: LoopState, config: TrainConfig, device: Device | None = None
) -> dict[str, Any]:
    """Everything a resume needs, in open_clip's checkpoint keys (state_dict, optimizer, scaler, epoch) and ours."""
    bare = unwrap(model)
    return {
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
    ) -> None:
        """Saves what `config.checkpoint` asks for (rank 0 only), each state carrying `config` and the RNG states."""
        self.folder, self.cfg, self.is_master = Path(folder), config.checkpoint, world.is_master
        self._parts = {"model": model, "stepper": stepper, "config": config, "device": device}
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
            if name not in (keep, LATEST) and _NUMBERED.match(name) and candidate.progress <= progress:
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


def _reason(err: Exception) -> str:
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
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(err)}") from None
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
        if not (_NUMBERED.match(path.name) or path.name == LATEST):
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


def remote_candidates(remote: RemoteSync, folder: Path) -> list[Candidate]:
    """The checkpoints at the remote, newest first: those the remote index lists where the copy is of the indexed
    file (size and mtime in the sync manifest), and open_clip_train's `epoch_N.pt` by their names. `path` is where
    a download would go."""
    index = json.loads(remote.read_text(f"checkpoints/{INDEX}") or "{}")
    found = []
    for rel in remote.files("checkpoints"):
        name = rel.rpartition("/")[2]
        entry, copied = index.get(name), remote.manifest.get(rel)
        if entry and copied and (entry["size"], entry["mtime_ns"]) == (copied["size"], copied["mtime_ns"]):
            progress = Progress(entry["epoch"], entry["epoch_step"], entry["step"])
        elif name.startswith("epoch_") and _NUMBERED.match(name) and name not in index:  # not written by us
            progress = Progress(int(_NUMBERED.match(name).group(2)))
        else:
            continue
        found.append(Candidate(progress, folder / name, remote=rel))
    return sorted(found, key=lambda c: c.progress, reverse=True)


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The local checkpoint with the most progress in `folder` (temporary files are ignored), without loading it."""
    candidates = local_candidates(folder)
    return candidates[0].path if candidates else None


# ------------------------------------------------------------------------------------------------- resume


@dataclass(frozen=True)
class Source:
    """The checkpoint a run resumes from: a local file, and the URL it came from (ranks that do not see the file
    read it there)."""

    path: str
    url: str | None = None


def _read_source(source: Source) -> dict[str, Any]:
    if os.path.isfile(source.path) or source.url is None:
        return load(source.path)
    return load_bytes(read_bytes(source.url), name=source.url)


def load_bytes(data: bytes, *, name: str) -> dict[str, Any]:
    """A checkpoint held in memory (read from a remote); errors name `name`."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {name}: {_reason(err)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"cannot read checkpoint {name}: it holds a {type(obj).__name__}, not a state dict")
    return obj


def _first_good(candidates: list[Candidate], *, remote: RemoteSync | None) -> tuple[Source | None, dict | None]:
    """The newest candidate that reads and has finite weights (downloaded first if it is remote)."""
    for candidate in candidates:
        try:
            if candidate.remote is not None:
                remote.fetch(candidate.remote, candidate.path)
            saved = load(candidate.path)
        except (CheckpointError, OSError) as err:
            log.warning("--resume latest: skipping %s: %s", candidate.remote or candidate.path, err)
            continue
        bad = non_finite(model_state(saved))
        if bad:
            log.warning("--resume latest: skipping %s: non-finite weights in %s", candidate.path, ", ".join(bad[:5]))
            continue
        url = remote.url_of(candidate.remote) if candidate.remote is not None else None
        return Source(str(candidate.path), url), saved
    return None, None


def _choose(spec: str, *, folder: Path, remote: RemoteSync | None) -> tuple[Source | None, dict | None]:
    """(source, its state) for `spec`: "latest" (the newest good one here or at the remote), a URL, or a file."""
    if spec == "latest":
        candidates = local_candidates(folder)
        if remote is not None:  # a local copy wins a tie: no download
            candidates = sorted(
                [*candidates, *remote_candidates(remote, folder)], key=lambda c: c.progress, reverse=True
            )
        return _first_good(candidates, remote=remote)
    if "://" in spec and not os.path.exists(spec):
        path = fetch_url(spec, folder / spec.rstrip("/").rpartition("/")[2])
        return Source(str(path), spec), load(path)
    return Source(spec), load(spec)


def resume(
    spec: str | None,
    *,
    folder: Path,
    world: World,
    model: nn.Module,
    stepper: Stepper,
    steps_per_epoch: int,
    remote: RemoteSync | None = None,
) -> LoopState:
    """The loop state to start from, with `model` and `stepper` loaded from the checkpoint `spec` names: a file
    (ours, or open_clip_train's: it continues that run), an fsspec URL, or "latest" for the newest complete one
    with finite weights in `folder` or at the `remote` (fresh when there is none, or without `spec`).
    `steps_per_epoch` places an open_clip_train checkpoint, which records epochs only."""
    if not spec:
        return LoopState()
    source, saved = _choose(spec, folder=folder, remote=remote) if world.is_master else (None, None)
    source = broadcast_object(source, world)
    if source is None:
        log.info("no checkpoint to resume from in %s%s: starting fresh", folder, f" or {remote.url}" if remote else "")
        return LoopState()
    return restore(
        saved or _read_source(source), source=source.path, model=model, stepper=stepper, steps_per_epoch=steps_per_epoch
    )


def restore(
    saved: dict[str, Any], *, source: str, model: nn.Module, stepper: Stepper, steps_per_epoch: int
) -> LoopState:
    """Load a read checkpoint into `model` and `stepper`; a bare state dict (open_clip's model-only checkpoint)
    loads the weights and starts at epoch 0, as open_clip_train does."""
    weights = model_state(saved)
    bad = non_finite(weights)
    if bad:
        raise CheckpointError(
            f"checkpoint {source} has non-finite weights ({', '.join(bad[:5])}); resume from an earlier checkpoint"
        )
    load_state_dict_strict(model, weights, source=f"checkpoint {source}")  # names the file and every mismatched key
    if "epoch" not in saved:
        log.info("loaded the weights of %s (no training state in it): starting at epoch 0", source)
        return LoopState()
    stepper.load_state_dict(
        {**saved, "optimizer": _optimizer_state(saved, model=model, stepper=stepper, source=source)}
    )
    if "step" in saved:  # ours
        mid_epoch = saved["epoch_step"] > 0
        state = LoopState(saved["epoch"], saved["step"], saved["epoch_step"], saved["rng"] if mid_epoch else None)
    else:  # open_clip_train's: saved at an epoch boundary
        state = LoopState(epoch=saved["epoch"], step=saved["epoch"] * steps_per_epoch)
    log.info("resumed from %s: epoch %d, step %d", source, state.epoch, state.step)
    return state


def open_clip_optimizer_names(saved: dict[str, Any], model: nn.Module) -> list[list[str]]:
    """Our names of the parameters in each group of an open_clip_train optimizer state, in its order: open_clip
    puts the trainable parameters in `named_parameters()` order (its state dict's order) into two groups, gains,
    biases and the logit scale first, the rest second."""
    weights = saved["state_dict"]
    unprefixed = {k.removeprefix("module."): v for k, v in weights.items()}
    layout = "clip" if is_clip_layout(unprefixed) else "custom_text"
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    groups: list[list[str]] = [[], []]
    for name in from_open_clip(weights):
        if name in trainable:
            theirs = next(iter(to_open_clip({name: None}, layout=layout)))
            ndim = trainable[name].ndim
            excluded = ndim < 2 or any(part in theirs for part in ("bn", "ln", "bias", "logit_scale"))
            groups[0 if excluded else 1].append(name)
    return groups


def _optimizer_state(saved: dict[str, Any], *, model: nn.Module, stepper: Stepper, source: str) -> dict[str, Any]:
    """The checkpoint's optimizer state for our optimizer: moments mapped by parameter name (hyperparameters are the
    flags'); an older checkpoint of ours without names loads as it is (the same groups in the same order)."""
    names = saved.get("optimizer_names")
    if names is None and "step" not in saved:
        names = open_clip_optimizer_names(saved, model)
    if names is None:
        return saved["optimizer"]
    optimizer = stepper.optimizer
    ours, theirs = optimizer_names(model, optimizer), saved["optimizer"]
    sizes = [len(g["params"]) for g in theirs["param_groups"]]
    known = {n for group in names for n in group}
    wanted = {n for group in ours for n in group}
    if sizes != [len(g) for g in names] or known != wanted:
        missing, extra = sorted(wanted - known), sorted(known - wanted)
        raise CheckpointError(
            f"the optimizer state in {source} is for other trainable parameters (groups of {sizes}; not in it: "
            f"{', '.join(missing[:8]) or '-'}; not trainable here: {', '.join(extra[:8]) or '-'}): resume with the "
            "--lock-* flags of the run that wrote it"
        )
    by_name = {}
    for group, group_names in zip(theirs["param_groups"], names):
        by_name.update({n: theirs["state"][i] for i, n in zip(group["params"], group_names) if i in theirs["state"]})
    target = optimizer.state_dict()
    state = {
        i: by_name[n]
        for group, group_names in zip(target["param_groups"], ours)
        for i, n in zip(group["params"], group_names)
        if n in by_name
    }
    return {"state": state, "param_groups": target["param_groups"]}
