"""Checkpoints that are safe to trust: a failed save leaves no temporary file and the previous checkpoint intact,
non-finite weights are never written, picked or allowed to delete a good checkpoint, `--delete-previous-checkpoint`
holds across restarts, `--resume latest` ranks checkpoints without loading them, and a bad `--resume` file fails
before the first step with a message that names it (and never suggests weights_only=False)."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

import open_mclip
from open_mclip.convert import CheckpointMismatchError, from_open_clip
from open_mclip.precision import Precision
from training import checkpoint, resume
from training.checkpoint import INDEX, CheckpointError, CheckpointWriter, latest_checkpoint, load, model_state
from training.devices import get_device
from training.distributed import World
from training.main import main
from training.optim import create_optimizer
from training.params import parse_args
from training.stepper import Stepper
from training.train import LoopState


def _writer(folder: Path, flags: str = "--save-frequency 1 --delete-previous-checkpoint") -> CheckpointWriter:
    cfg = parse_args(f"--model mclip-tiny --precision fp32 {flags}".split())
    model = open_mclip.create_model("mclip-tiny", precision="fp32")
    device = get_device("cpu")
    optimizer = create_optimizer(model, cfg.optim, device=device, model_name=cfg.model.model)
    stepper = Stepper(optimizer, device=device, precision=Precision.parse("fp32"), grad_clip_norm=None)
    folder.mkdir(parents=True, exist_ok=True)
    return CheckpointWriter(folder, cfg, model=model, stepper=stepper, world=World())


def _poison(writer: CheckpointWriter) -> None:
    with torch.no_grad():
        writer._parts["model"].visual.conv1.weight[0, 0, 0, 0] = float("nan")


def test_a_failed_save_removes_its_temporary_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    writer = _writer(tmp_path)
    writer.after_epoch(LoopState(epoch=1, step=4), last=False)
    good = (tmp_path / "epoch_1.pt").read_bytes()
    real_save = torch.save

    def disk_full(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)  # bytes reach the temporary file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match=r"could not write checkpoint .*epoch_2\.pt: No space left on device"):
        writer.after_epoch(LoopState(epoch=2, step=8), last=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pt", INDEX]  # no epoch_2.pt.tmp, nothing deleted
    assert (tmp_path / "epoch_1.pt").read_bytes() == good


def test_non_finite_weights_are_never_written_and_never_cost_the_good_checkpoint(tmp_path):
    writer = _writer(tmp_path, "--save-frequency 1 --save-most-recent --delete-previous-checkpoint")
    writer.after_epoch(LoopState(epoch=1, step=4), last=False)
    _poison(writer)
    writer.after_epoch(LoopState(epoch=2, step=8), last=False)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch_1.pt", "epoch_latest.pt"]
    assert load(tmp_path / "epoch_latest.pt")["step"] == 4  # the latest is still the good state
    assert latest_checkpoint(tmp_path).name in ("epoch_1.pt", "epoch_latest.pt")
    assert not checkpoint.non_finite(model_state(load(latest_checkpoint(tmp_path))))


def test_resume_latest_passes_over_a_newer_checkpoint_with_non_finite_weights(tmp_path):
    writer = _writer(tmp_path, "--save-frequency 1")
    writer.after_epoch(LoopState(epoch=1, step=4), last=False)
    state = load(tmp_path / "epoch_1.pt")
    state.update(epoch=2, step=8)
    state["state_dict"]["logit_scale"] = torch.tensor(float("nan"))
    torch.save(state, tmp_path / "epoch_2.pt")  # e.g. written by an older version that did not check
    parts = writer._parts
    resumed = resume.resume(
        "latest", folder=tmp_path, world=World(), model=parts["model"], stepper=parts["stepper"], steps_per_epoch=4
    )
    assert (resumed.epoch, resumed.step) == (1, 4)


def test_resume_latest_ranks_by_the_index_or_mmap_and_never_reads_the_weights(tmp_path, monkeypatch):
    writer = _writer(tmp_path, "--save-frequency 1 --save-every-n-steps 2")
    for step in (2, 4, 6):
        writer.after_step(LoopState(epoch=0, step=step, epoch_step=step))
    writer.after_epoch(LoopState(epoch=1, step=8), last=False)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("mmap", False)) or real_load(*a, **k))
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch_1.pt"
    assert calls == []  # the index answers
    (tmp_path / INDEX).unlink()
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch_1.pt"
    assert calls == [True] * 4  # each file's metadata through mmap, no weights read


def test_delete_previous_checkpoint_holds_across_restarts(tmp_path, tiny_synthetic):
    """Each restart used to leave the previous run's last step_N.pt behind."""
    flags = [*tiny_synthetic(samples=64), "--precision", "fp32", "--logs", str(tmp_path), "--name", "run"]
    flags += "--save-every-n-steps 2 --save-frequency 0 --delete-previous-checkpoint".split()
    main([*flags, "--epochs", "1"])  # steps 1-4
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.pt")) == ["step_4.pt"]
    main([*flags, "--epochs", "2", "--resume", "latest"])  # steps 5-8
    main([*flags, "--epochs", "3", "--resume", "latest"])  # steps 9-12
    assert sorted(p.name for p in folder.glob("*.pt")) == ["step_12.pt"]
    assert sorted(json.loads((folder / INDEX).read_text())) == ["step_12.pt"]


def test_our_checkpoints_resume_in_either_key_layout(tmp_path):
    writer = _writer(tmp_path, "--save-frequency 1")
    writer.after_epoch(LoopState(epoch=1, step=4), last=False)
    saved = load(tmp_path / "epoch_1.pt")
    assert "token_embedding.weight" in saved["state_dict"]  # open_clip's CLIP layout
    saved["state_dict"] = from_open_clip(saved["state_dict"])  # ours (CustomTextCLIP names), as older versions wrote
    assert "text.token_embedding.weight" in saved["state_dict"]
    torch.save(saved, tmp_path / "ours.pt")
    other = _writer(tmp_path / "other")._parts
    resumed = resume.resume(
        str(tmp_path / "ours.pt"),
        folder=tmp_path,
        world=World(),
        model=other["model"],
        stepper=other["stepper"],
        steps_per_epoch=4,
    )
    assert (resumed.epoch, resumed.step) == (1, 4)
    for key, value in writer._parts["model"].state_dict().items():
        assert torch.equal(other["model"].state_dict()[key], value), key


# --------------------------------------------------------------------------------- bad --resume files


class _Foreign:
    """Any class: a pickle of it would run code to load."""


def _bad_files(folder: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {
        "garbage": os.urandom(4096),
        "truncated": data[: len(data) // 2],
        "empty": b"",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.pt"
        paths[name].write_bytes(content)
    paths["code"] = folder / "code.pt"
    torch.save({"epoch": 1, "state_dict": {}, "hook": _Foreign()}, paths["code"])
    paths["text"] = folder / "text.pt"
    paths["text"].write_text("not a checkpoint\n")
    paths["pickle"] = folder / "pickle.pt"
    paths["pickle"].write_bytes(pickle.dumps([1, 2, 3]))
    return paths


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    _writer(folder, "--save-frequency 1").after_epoch(LoopState(epoch=1, step=4), last=False)
    return folder / "epoch_1.pt"


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "code", "text", "pickle"])
def test_an_unreadable_resume_file_fails_at_start_up_naming_it(tmp_path, good_checkpoint, tiny_synthetic, kind):
    bad = _bad_files(tmp_path, good_checkpoint)[kind]
    flags = [*tiny_synthetic(), "--logs", str(tmp_path / "logs"), "--name", "run", "--resume", str(bad)]
    with pytest.raises(CheckpointError) as caught:
        main(flags)
    message = str(caught.value)
    assert str(bad) in message and "weights_only" not in message
    assert not (tmp_path / "logs" / "run" / "metrics.jsonl").exists()  # before any model, data or step
    expected = {"truncated": "truncated", "empty": "empty", "code": "Python objects beyond tensors (test_checkpoint"}
    assert expected.get(kind, "not a PyTorch checkpoint") in message


def test_a_resume_file_of_another_architecture_names_the_file_and_the_keys(tmp_path, tiny_synthetic):
    other = open_mclip.create_model("mclip-tiny", precision="fp32", force_context_length=32)
    path = tmp_path / "other.pt"
    torch.save({"epoch": 1, "step": 4, "epoch_step": 0, "state_dict": other.state_dict()}, path)
    flags = [*tiny_synthetic(), "--logs", str(tmp_path / "logs"), "--name", "run", "--resume", str(path)]
    with pytest.raises(CheckpointMismatchError) as caught:
        main(flags)
    message = str(caught.value)
    assert str(path) in message and "text.positional_embedding: checkpoint (32, 64) vs model (77, 64)" in message
    assert "weights_only" not in message
    rows = (tmp_path / "logs" / "run" / "metrics.jsonl").read_text()
    assert rows == ""  # no step was taken
