"""Resuming a run: `resume()` picks the checkpoint `--resume` names (a path, a URL, or `latest` among the local and
remote ones, skipping unreadable files), and `restore()` loads it into the model, the stepper and the loop state.

It reads ours in either layout and open_clip_train's (`epoch`, `state_dict` with `module.` prefixes, `optimizer`,
`scaler`, no `step`), remapping the optimizer moments by parameter name.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from open_mclip.convert import from_open_clip, is_clip_layout, load_state_dict_strict, to_open_clip

from .checkpoint import (
    INDEX,
    NUMBERED,
    Candidate,
    CheckpointError,
    Progress,
    failure_reason,
    load,
    local_candidates,
    model_state,
    non_finite,
    optimizer_names,
)
from .distributed import World, broadcast_object
from .divergence import GUARD_TOTALS
from .optim import NO_DECAY_SUBSTRINGS
from .remote import RemoteSync, fetch_url, read_bytes
from .stepper import Stepper
from .train import LoopState

log = logging.getLogger(__name__)


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
        elif name.startswith("epoch_") and NUMBERED.match(name) and name not in index:  # not written by us
            progress = Progress(int(NUMBERED.match(name).group(2)))
        else:
            continue
        found.append(Candidate(progress, folder / name, remote=rel))
    return sorted(found, key=lambda c: c.progress, reverse=True)


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
        raise CheckpointError(f"cannot read checkpoint {name}: {failure_reason(err)}") from None
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
        state.guard_totals = dict(saved.get(GUARD_TOTALS, {}))  # absent before the guard's counts were saved
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
            excluded = ndim < 2 or any(part in theirs for part in NO_DECAY_SUBSTRINGS)  # on open_clip's name
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
