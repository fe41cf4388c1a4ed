"""A real 2-process `torchrun` run of the trainer on the CPU (gloo): DDP, gathered local loss, checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from training.checkpoint import load


@pytest.mark.distributed
def test_torchrun_two_processes_train_and_checkpoint(tmp_path, free_port):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "training.main", "--",  # "--": torchrun would take --logs
        "--dataset-type", "synthetic", "--train-num-samples", "64", "--batch-size", "8", "--model", "mclip-tiny",
        "--epochs", "1", "--warmup", "1", "--workers", "0", "--precision", "fp32", "--device", "cpu",
        "--local-loss", "--gather-with-grad", "--log-every-n-steps", "1", "--logs", str(tmp_path), "--name", "ddp",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rank 1 of 2 on Device(cpu) (gloo)" in result.stdout and "rank 0 of 2" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # 64 samples / (2 ranks x 8) per step
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    saved = load(tmp_path / "ddp" / "checkpoints" / "epoch_1.pt")
    assert saved["step"] == 4 and not any(k.startswith("module.") for k in saved["state_dict"])
