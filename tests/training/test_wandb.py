"""Weights & Biases through the real `wandb` package in offline mode (WANDB_MODE=offline): the run files it writes
under WANDB_DIR are read back. Every training and validation row is there at its optimizer step; a resumed run
writes to the same W&B run id (its name, as open_clip_train's), continuing the step count."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from training.main import main
from training.params import parse_args

_BLOCK, _HEADER = 32768, 7  # W&B's run file: LevelDB-style log blocks, records of (crc32c, length, type) + bytes
_FULL, _LAST = 1, 4  # a record whole in one block, or the last piece of one split across blocks (FIRST 2, MIDDLE 3)


def records(path: Path) -> list:
    """The protobuf records of a W&B offline run file (`run-ID.wandb`); wandb 0.31 ships no reader for it."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, out, pieces = 7, [], b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER]) if left >= _HEADER else (0, 0, 0)
        if kind == 0:  # a block's padding
            pos += left
            continue
        pieces += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (_FULL, _LAST):
            out.append(pb.Record.FromString(pieces))
            pieces = b""
    return out


def history(path: Path) -> list[tuple[int, dict]]:
    """(step, {key: value}) of every logged row, without W&B's own `_step`, `_runtime`, `_timestamp`."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows.append((record.history.step.num, {k: v for k, v in items.items() if not k.startswith("_")}))
    return rows


def run_info(path: Path):
    """The run record: run_id, project, display_name, notes..."""
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")


def _run_files(wandb_dir: Path) -> list[Path]:
    return sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))


def _jsonl(run_dir: Path, split: str) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row for row in rows if row["split"] == split}


@pytest.mark.e2e
def test_metrics_reach_wandb_at_their_steps_and_a_resumed_run_continues_it(tmp_path, monkeypatch, tiny_synthetic):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    flags = [
        *tiny_synthetic(samples=64, batch_size=16),  # 4 steps per epoch
        *"--val-num-samples 16 --precision fp32 --log-every-n-steps 1 --report-to wandb".split(),
        *["--wandb-project-name", "mnist-demo", "--wandb-notes", "first try", "--logs", str(tmp_path), "--name", "r1"],
    ]
    main([*flags, "--epochs", "1"])
    time.sleep(1.1)  # W&B names offline run folders by the second
    main([*flags, "--epochs", "2", "--resume", "latest"])

    first, second = _run_files(tmp_path / "wb")
    for path in (first, second):
        info = run_info(path)
        assert (info.run_id, info.project, info.display_name, info.notes) == ("r1", "mnist-demo", "r1", "first try")
    train, val = _jsonl(tmp_path / "r1", "train"), _jsonl(tmp_path / "r1", "val")
    logged = history(first) + history(second)
    train_rows = {step: row for step, row in logged if "train/loss" in row}
    assert sorted(train_rows) == [1, 2, 3, 4, 5, 6, 7, 8]  # the resumed run continued at step 5
    for step, row in train_rows.items():
        assert row["train/loss"] == pytest.approx(train[step]["loss"], rel=1e-12)
        assert row["train/lr"] == pytest.approx(train[step]["lr"], rel=1e-12)
    val_rows = [(step, row) for step, row in logged if "val/val_loss" in row]
    # validation after each epoch, at that epoch's last step, as open_clip_train logs it
    assert [(step, row["epoch"]) for step, row in val_rows] == [(4, 1), (8, 2)]
    assert [row["val/val_loss"] for _, row in val_rows] == pytest.approx([val[e]["val_loss"] for e in (1, 2)])


@pytest.mark.parametrize(
    "value, sinks",
    [
        ("", set()),
        ("wandb", {"wandb"}),
        ("tensorboard,wandb", {"tensorboard", "wandb"}),
        ("all", {"tensorboard", "wandb"}),
    ],
)
def test_report_to_reads_as_open_clip_reads_it(value, sinks):
    assert parse_args(["--report-to", value]).logging.sinks == sinks


def test_an_unknown_report_to_sink_is_refused_when_parsed():
    with pytest.raises(ValueError, match="--report-to 'wandb,mlflow': unknown mlflow"):
        parse_args(["--report-to", "wandb,mlflow"])
