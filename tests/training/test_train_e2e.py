"""The trainer end to end on the CPU: a run killed while writing a checkpoint resumes with the losses an
uninterrupted run has; corrupt samples are skipped and counted; an evaluation-only run; LiT flags reach the towers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.checkpoint import CheckpointError, load
from training.main import main

HERE = Path(__file__).parent


def _losses(run_dir: Path) -> dict[int, float]:
    """Loss per optimizer step; a step logged twice (before a kill and after the resume) keeps its last value."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["split"] == "train":
            out[row["step"]] = row["loss"]
    return out


@pytest.fixture(scope="module")
def base(tiny_synthetic) -> list[str]:
    """18 optimizer steps over 3 epochs, each logged."""
    return (
        tiny_synthetic(samples=96, epochs=3)
        + "--warmup 3 --lr 1e-3 --precision fp32 --log-every-n-steps 1 --seed 3".split()
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, base) -> dict[int, float]:
    logs = tmp_path_factory.mktemp("logs")
    main([*base, "--logs", str(logs), "--name", "straight"])
    losses = _losses(logs / "straight")
    assert sorted(losses) == list(range(1, 19))
    return losses


@pytest.mark.e2e
@pytest.mark.parametrize(
    "extra, kill_at, resumes_from",
    [([], 2, "epoch_1.pt"), (["--save-every-n-steps", "4"], 4, "step_8.pt")],
    ids=["epoch-boundary", "mid-epoch"],
)
def test_sigkill_while_saving_then_resume_latest(tmp_path, base, uninterrupted, extra, kill_at, resumes_from):
    args = [*base, *extra, "--logs", str(tmp_path), "--name", "run"]
    command = [sys.executable, str(HERE / "kill_during_save.py"), str(kill_at), *args]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = tmp_path / "run" / "checkpoints"
    partial = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(partial) == 1, "the kill should leave exactly one half-written temporary file"
    with pytest.raises(CheckpointError, match="truncated"):
        load(folder / partial[0])  # it really is truncated
    complete = sorted(p.name for p in folder.glob("*.pt"))
    for name in complete:
        load(folder / name)  # every finished checkpoint is intact

    command = [sys.executable, "-m", "training.main", *args, "--resume", "latest"]
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {folder / resumes_from}" in resumed.stdout
    losses = _losses(tmp_path / "run")
    assert sorted(losses) == list(range(1, 19))
    for step, loss in uninterrupted.items():
        assert losses[step] == pytest.approx(loss, abs=1e-6), f"step {step}"


def test_lock_flags_reach_the_towers():
    from training.devices import get_device
    from training.distributed import World
    from training.main import build_model
    from training.params import parse_args

    cfg = parse_args("--model mclip-tiny --lock-image --lock-text --lock-text-unlocked-blocks 1".split())  # uniform
    model, _, _ = build_model(cfg, get_device("cpu"), World())
    assert not any(p.requires_grad for p in model.visual.parameters())
    trainable = {n for n, p in model.text.named_parameters() if p.requires_grad}
    top = ("transformer.resblocks.1.", "ln_final", "text_projection")
    assert trainable == {n for n, _ in model.text.named_parameters() if n.startswith(top)}
    assert model.logit_scale.requires_grad


@pytest.mark.e2e
def test_evaluation_only_writes_results(tmp_path):
    args = (
        "--dataset-type synthetic --val-num-samples 32 --batch-size 16 --model mclip-tiny --workers 0 --precision fp32"
    )
    results = main([*args.split(), "--logs", str(tmp_path), "--name", "eval"])
    assert set(results["val"]) >= {"val_loss", "image_to_text_R@1", "text_to_image_R@10"}
    assert results["val"]["num_samples"] == 32
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["val"]["val_loss"] == pytest.approx(results["val"]["val_loss"])
    assert torch.isfinite(torch.tensor(results["val"]["val_loss"]))


@pytest.mark.e2e
def test_corrupt_samples_are_skipped_counted_and_logged(tmp_path, digits, png):
    import io

    import webdataset as wds
    from PIL import Image

    shard = tmp_path / "shard-000000.tar"
    with wds.TarWriter(str(shard)) as sink:
        for i, (digit, label) in enumerate(zip(digits[0][:40], digits[1][:40])):
            sink.write({"__key__": f"good{i:03d}", "png": png(digit), "txt": f"a handwritten {label}"})
            if i == 10:
                jpeg = io.BytesIO()
                Image.fromarray(digit).convert("RGB").save(jpeg, format="JPEG")
                sink.write({"__key__": "truncated", "jpg": jpeg.getvalue()[:200], "txt": "cut short"})
                sink.write({"__key__": "notimage", "jpg": b"%PDF-1.4 not an image", "txt": "a pdf"})
                sink.write({"__key__": "emptycap", "png": png(digit), "txt": "   "})
                sink.write({"__key__": "nocap", "png": png(digit)})
    flags = "--train-num-samples 40 --batch-size 10 --workers 1 --shuffle-buffer 1 --model mclip-tiny --epochs 1"
    flags += " --warmup 1 --precision fp32 --log-every-n-steps 1"
    main(["--train-data", str(shard), *flags.split(), "--logs", str(tmp_path), "--name", "corrupt"])
    rows = [json.loads(line) for line in (tmp_path / "corrupt" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # trained to the end
    assert train[-1]["skipped_samples"] == 4
    log = (tmp_path / "corrupt" / "out.log").read_text()
    assert "truncated" in log and "notimage" in log  # each skip is named in the log
