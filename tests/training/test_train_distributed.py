"""A real 2-process `torchrun` run of the trainer on the CPU (gloo): DDP, gathered local loss, checkpoints."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from training.checkpoint import load


@pytest.mark.e2e
@pytest.mark.distributed
def test_torchrun_two_processes_train_and_checkpoint(tmp_path, torchrun, tiny_synthetic):
    flags = [*tiny_synthetic(batch_size=8), *"--precision fp32 --device cpu --local-loss --gather-with-grad".split()]
    command = torchrun(*flags, "--log-every-n-steps", "1", "--logs", str(tmp_path), "--name", "ddp")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rank 1 of 2 on Device(cpu) (gloo)" in result.stdout and "rank 0 of 2" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # 64 samples / (2 ranks x 8) per step
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    saved = load(tmp_path / "ddp" / "checkpoints" / "epoch_1.pt")
    assert saved["step"] == 4 and not any(k.startswith("module.") for k in saved["state_dict"])
