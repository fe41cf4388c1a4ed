"""Checkpoints shared with open_clip, each side driven by its real code: an open_clip_train checkpoint resumes here
with the losses and final weights open_clip_train reaches when it resumes the same file, and stock
`open_clip.create_model(name, pretrained=our_checkpoint)` loads ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import open_mclip
from open_mclip.convert import from_open_clip
from open_mclip.open_clip_schema import to_open_clip_config
from training.checkpoint import load, model_state
from training.main import main

HERE = Path(__file__).parent
# one batch per epoch (batch order cannot differ), whole-image crops (no random augmentation), and AdamW's beta2 and
# eps given: for our mclip-* names (no "vit" in them) open_clip_train would take its ResNet defaults, we go by the
# declared ViT tower (the steps themselves are equal: tests/training/test_learning_parity.py)
COMMON = (
    "--dataset-type csv --model mclip-tiny --batch-size 16 --lr 1e-3 --warmup 2 --beta2 0.98 --eps 1e-6 "
    "--precision fp32 --device cpu --workers 0 --seed 0 --save-frequency 1 --log-every-n-steps 1"
).split() + ["--aug-cfg", "scale=(1.0, 1.0)", "ratio=(1.0, 1.0)"]


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> Path:
    """mclip-tiny in open_clip's schema, for open_clip's registry."""
    folder = tmp_path_factory.mktemp("configs")
    (folder / "mclip-tiny.json").write_text(json.dumps(to_open_clip_config(open_mclip.model_config("mclip-tiny"))))
    return folder


@pytest.fixture(scope="module")
def table(tmp_path_factory, digit_csv) -> Path:
    """16 real MNIST digits as PNG files with distinct captions, in open_clip's default CSV layout."""
    return digit_csv(tmp_path_factory.mktemp("digits"), 16)


def open_clip_train(configs: Path, *flags: str) -> None:
    command = [sys.executable, str(HERE / "open_clip_train_main.py"), str(configs), *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def open_clip_losses(run_dir: Path) -> dict[int, float]:
    """open_clip_train's logged training loss per step (its steps count from 0), from its TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


def our_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if row["split"] == "train"}


@pytest.fixture(scope="module")
def open_clip_run(tmp_path_factory, configs, table) -> Path:
    """open_clip_train's checkpoints after 2 of 5 epochs, then its own resume of epoch_2.pt to the end."""
    logs = tmp_path_factory.mktemp("logs")
    flags = [*COMMON, "--train-data", str(table), "--logs", str(logs), "--report-to", "tensorboard"]
    open_clip_train(configs, *flags, "--epochs", "2", "--name", "first")
    checkpoint = logs / "first" / "checkpoints" / "epoch_2.pt"
    open_clip_train(configs, *flags, "--epochs", "5", "--name", "resumed", "--resume", str(checkpoint))
    return logs


@pytest.mark.e2e
def test_an_open_clip_train_checkpoint_resumes_here_as_in_open_clip_train(tmp_path, open_clip_run, table):
    checkpoint = open_clip_run / "first" / "checkpoints" / "epoch_2.pt"
    saved = torch.load(checkpoint, weights_only=True)
    assert "step" not in saved and {"epoch", "state_dict", "optimizer"} <= set(saved)  # open_clip_train's format
    paths = ["--train-data", str(table), "--logs", str(tmp_path), "--resume", str(checkpoint)]
    main([*COMMON, *paths, "--epochs", "5", "--name", "ours"])
    theirs = open_clip_losses(open_clip_run / "resumed")
    ours = our_losses(tmp_path / "ours")
    assert sorted(theirs) == [2, 3, 4] and sorted(ours) == [3, 4, 5]  # open_clip counts steps from 0, we from 1
    for step in (2, 3, 4):
        assert ours[step + 1] == pytest.approx(theirs[step], abs=1e-5), f"step {step}"
    # the moments were carried over: the final weights agree too (a fresh AdamW state would move them differently)
    final_theirs = from_open_clip(load(open_clip_run / "resumed" / "checkpoints" / "epoch_5.pt")["state_dict"])
    final_ours = model_state(load(tmp_path / "ours" / "checkpoints" / "epoch_5.pt"))
    assert final_ours.keys() == final_theirs.keys()
    for key, value in final_theirs.items():
        torch.testing.assert_close(final_ours[key], value, atol=1e-5, rtol=0, msg=key)


@pytest.mark.e2e
def test_stock_open_clip_create_model_loads_our_checkpoint(tmp_path, configs, tiny_synthetic):
    import open_clip

    main([*tiny_synthetic(samples=32), "--precision", "fp32", "--logs", str(tmp_path), "--name", "ours"])
    path = tmp_path / "ours" / "checkpoints" / "epoch_1.pt"
    assert "token_embedding.weight" in load(path)["state_dict"]  # open_clip's CLIP layout: text tower at the top
    open_clip.add_model_config(configs)
    theirs = open_clip.create_model("mclip-tiny", pretrained=str(path)).eval()  # open_clip loads strictly
    ours = open_mclip.create_model("mclip-tiny", precision="fp32").eval()
    ours.load_state_dict(model_state(load(path)))
    images, texts = torch.randn(4, 3, 32, 32), open_mclip.tokenize(["a cat", "ein Hund", "un oiseau", "a 7"])
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode_image(images), ours.encode_image(images), atol=1e-5, rtol=0)
        torch.testing.assert_close(theirs.encode_text(texts), ours.encode_text(texts), atol=1e-5, rtol=0)
