"""Start-up checks: what would otherwise fail after hours is tried before the model is built. The checkpoint folder
takes a real write, every local data source exists and holds something, a `--resume` file reads as a checkpoint.

Only paths from the configuration are read (a CSV's first lines, shard sizes); loading the data is `data/`'s job.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import braceexpand

from .checkpoint import load
from .config import DataConfig, TrainConfig
from .data import resolve_dataset_type
from .distributed import World

log = logging.getLogger(__name__)


class StartupCheckError(ValueError):
    """A resource the run needs is missing, empty or not writable; the message names it and the fix."""


def check_startup(cfg: TrainConfig, *, folder: Path, world: World) -> None:
    """Every check, on every rank (each node must see the data and the resume file); the write test on rank 0,
    the one that saves checkpoints."""
    if world.is_master and (cfg.data.train_data is not None or cfg.data.dataset_type == "synthetic"):
        check_writable(folder / "checkpoints")
    check_data(cfg.data)
    resume = cfg.checkpoint.resume
    if resume and resume != "latest" and not ("://" in resume and not os.path.exists(resume)):
        load(resume, mmap=True)  # reads the archive's directory and metadata, not the weights


def check_writable(folder: Path) -> None:
    """Write, flush and remove a small file in `folder`: permissions, a read-only mount or a full disk show now."""
    probe = folder / f".write_test.{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"open_mclip write test\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise StartupCheckError(
            f"the checkpoint folder {folder} is not writable ({err.strerror or err}): fix its permissions or free "
            "space there, or point --logs elsewhere"
        ) from None
    finally:
        probe.unlink(missing_ok=True)


def check_data(cfg: DataConfig) -> None:
    """--train-data and --val-data: a CSV exists and has a row; each source of shards has local shards that exist
    and are not empty (a few missing ones are logged; URLs and pipe: sources are left to the loader)."""
    if cfg.dataset_type == "synthetic":
        return
    for flag, spec in (("--train-data", cfg.train_data), ("--val-data", cfg.val_data)):
        if spec is None:
            continue
        if resolve_dataset_type(spec, cfg.dataset_type) == "csv":
            _check_csv(flag, spec)
        else:
            for source in (s.strip() for s in spec.split("::") if s.strip()):
                _check_shards(flag, source)


def _check_csv(flag: str, path: str) -> None:
    if not os.path.isfile(path):
        raise StartupCheckError(f"{flag} {path}: no such file; check the path")
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = [line for _, line in zip(range(2), handle)]
    if len(lines) < 2 or not lines[1].strip():
        raise StartupCheckError(
            f"{flag} {path} holds no rows (a header line at most); give a table of image-caption rows"
        )


def _check_shards(flag: str, source: str) -> None:
    shards = list(braceexpand.braceexpand(source))
    local = [s for s in shards if "://" not in s and not s.startswith("pipe:")]
    if not local:
        return
    missing = [s for s in local if not os.path.isfile(s)]
    if len(missing) == len(local):
        raise StartupCheckError(f"{flag}: none of the {len(local)} shard(s) of {source} exists (e.g. {missing[0]})")
    if all(os.path.getsize(s) == 0 for s in local if s not in missing):
        raise StartupCheckError(f"{flag}: every existing shard of {source} is empty; check how they were written")
    if missing:
        log.warning(
            "%s: %d of %d shards of %s do not exist, e.g. %s", flag, len(missing), len(local), source, missing[0]
        )
