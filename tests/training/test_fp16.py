"""--precision fp16 and pure_fp16 train without a grad scaler (a GradScaler cannot unscale float16 gradients; open_clip
scales the loss for amp alone), and resume to the uninterrupted run's weights; on the CPU, and on CUDA where present."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from open_mclip.precision import Precision
from training.checkpoint import load
from training.devices import get_device
from training.main import main


def test_only_amp_asks_for_a_grad_scaler():
    scaled = {name for name in ("fp32", "amp", "amp_bf16", "bf16", "fp16", "pure_bf16", "pure_fp16")}
    scaled = {name for name in scaled if Precision.parse(name).needs_scaler}
    assert scaled == {"amp"}
    device = get_device("cpu")
    assert (
        device.grad_scaler(Precision.parse("fp16")) is None and device.grad_scaler(Precision.parse("pure_fp16")) is None
    )


def _train_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"]


def _run(logs: Path, name: str, flags: list[str], *extra: str) -> dict:
    main([*flags, "--logs", str(logs), "--name", name, *extra])
    return load(logs / name / "checkpoints" / "epoch_2.pt")


@pytest.mark.e2e
@pytest.mark.parametrize("precision", ["fp16", "pure_fp16"])
def test_float16_weights_train_and_resume_on_the_cpu(tmp_path, tiny_synthetic, precision, one_torch_thread):
    flags = [*tiny_synthetic(samples=48, epochs=2), *f"--precision {precision} --lr 1e-3 --log-every-n-steps 1".split()]
    straight = _run(tmp_path, "straight", flags)
    rows = _train_rows(tmp_path / "straight")
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(math.isfinite(r["loss"]) for r in rows)
    assert straight["scaler"] is None
    weights = straight["state_dict"]
    assert weights["visual.conv1.weight"].dtype == torch.float16  # the matrices train in float16
    expected_norm = torch.float16 if precision == "pure_fp16" else torch.float32  # pure_: every weight
    assert weights["visual.ln_post.weight"].dtype == expected_norm

    first = load(tmp_path / "straight" / "checkpoints" / "epoch_1.pt")
    assert not torch.equal(first["state_dict"]["visual.conv1.weight"], weights["visual.conv1.weight"])  # it moved
    shutil.copy(tmp_path / "straight" / "checkpoints" / "epoch_1.pt", tmp_path / "epoch_1.pt")
    resumed = _run(tmp_path, "resumed", flags, "--resume", str(tmp_path / "epoch_1.pt"))
    for key, value in weights.items():
        assert torch.equal(resumed["state_dict"][key], value), key


@pytest.mark.e2e
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "pure_fp16"])
def test_float16_weights_train_on_cuda(tmp_path, tiny_synthetic, precision):
    flags = [*tiny_synthetic(samples=48, epochs=2), *f"--precision {precision} --lr 1e-3 --log-every-n-steps 1".split()]
    saved = _run(tmp_path, precision, ["--device", "cuda", *flags])
    rows = _train_rows(tmp_path / precision)
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(math.isfinite(r["loss"]) for r in rows)
    assert saved["scaler"] is None and saved["state_dict"]["visual.conv1.weight"].dtype == torch.float16
