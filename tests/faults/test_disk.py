"""A full or read-only disk under the checkpoint folder, as a real small tmpfs where the machine lets us mount one
(root in a container), else through a patched writer: a full disk fails the save that does not fit with a message
naming the checkpoint, removes its temporary file and keeps the previous checkpoint; a read-only folder stops the
run at start-up, before the first step."""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.checkpoint import INDEX, load, model_state, non_finite
from training.main import main
from training.startup import StartupCheckError

MB = 2**20
CHECKPOINT_MB = 40  # mclip-tiny with AdamW's moments: 40.8 MB a checkpoint


def _mount(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path, monkeypatch) -> Iterator[tuple[Path, str]]:
    """The checkpoint folder of run "run" under tmp_path on a 60 MB disk (one checkpoint fits, not two): a tmpfs,
    or a quota that a patched torch.save enforces where mounting is not allowed; yields (folder, how)."""
    folder = tmp_path / "run" / "checkpoints"
    if _mount(folder, f"size={60 * MB}"):
        yield folder, "tmpfs"
        subprocess.run(["umount", str(folder)], check=False)
        return
    real_save = torch.save

    def quota_save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        used = sum(p.stat().st_size for p in folder.iterdir())
        if used > 60 * MB:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", quota_save)
    yield folder, "patched"


@pytest.mark.e2e
def test_a_full_disk_fails_the_save_and_keeps_the_previous_checkpoint(
    tmp_path, small_disk, train_flags, one_torch_thread
):
    folder, how = small_disk
    extra = "--epochs 1 --save-every-n-steps 4 --delete-previous-checkpoint"
    with pytest.raises(OSError) as err:  # on a real full tmpfs torch raises a RuntimeError from the ENOSPC
        main(train_flags(logs=tmp_path, name="run", extra=extra))
    assert sorted(p.name for p in folder.iterdir()) == [INDEX, "step_4.pt"], how  # no step_8.pt.tmp
    assert json.loads((folder / INDEX).read_text())["step_4.pt"]["step"] == 4
    kept = load(folder / "step_4.pt")
    assert kept["step"] == 4 and not non_finite(model_state(kept))
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC, repr(err.value)
    assert "could not write checkpoint" in str(err.value) and "step_8.pt" in str(err.value)


@pytest.fixture
def read_only_checkpoints(tmp_path, monkeypatch) -> Iterator[tuple[Path, str]]:
    """The checkpoint folder of run "run" read-only: a read-only tmpfs, else an open() that refuses writes there
    (root ignores chmod); yields (folder, how)."""
    folder = tmp_path / "run" / "checkpoints"
    if _mount(folder, "ro,size=1m"):
        yield folder, "tmpfs"
        subprocess.run(["umount", str(folder)], check=False)
        return
    import builtins

    real_open = builtins.open

    def read_only(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+") and str(file).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only)
    yield folder, "patched"


@pytest.mark.e2e
def test_a_read_only_checkpoint_folder_stops_the_run_before_the_first_step(
    tmp_path, read_only_checkpoints, train_flags
):
    folder, how = read_only_checkpoints
    with pytest.raises(StartupCheckError, match="Read-only file system") as err:
        main(train_flags(logs=tmp_path, name="run"))
    assert str(folder) in str(err.value), how
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert not metrics.exists() or '"train"' not in metrics.read_text()  # not a single step trained
