"""Start-up checks: a checkpoint folder that cannot be written, and data that is missing or empty, stop the run
before the model is built, with a message naming the folder or the flag and the path (a read-only checkpoint
folder used to be found after a whole epoch of training)."""

from __future__ import annotations

import builtins
import errno
from pathlib import Path

import pytest

from training.config import DataConfig
from training.main import main
from training.startup import StartupCheckError, check_data


def test_a_read_only_checkpoint_folder_stops_the_run_before_the_first_step(tmp_path, monkeypatch, tiny_synthetic):
    folder = tmp_path / "run" / "checkpoints"
    real_open = builtins.open

    def read_only(file, mode="r", *args, **kwargs):  # the folder as a read-only mount shows it (root ignores chmod)
        if any(c in mode for c in "wax+") and Path(file).parent == folder:
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only)
    with pytest.raises(StartupCheckError, match=rf"checkpoint folder {folder} is not writable \(Read-only file system"):
        main([*tiny_synthetic(), "--logs", str(tmp_path), "--name", "run"])
    assert (tmp_path / "run" / "metrics.jsonl").exists() is False  # no step, no metrics: nothing was trained


def _shards(folder: Path, sizes: list[int]) -> str:
    folder.mkdir()
    for i, size in enumerate(sizes):
        if size >= 0:
            (folder / f"{i:03d}.tar").write_bytes(b"\0" * size)
    return str(folder / f"{{000..{len(sizes) - 1:03d}}}.tar")


def test_missing_or_empty_data_is_refused_naming_the_flag_and_the_path(tmp_path):
    missing_csv = tmp_path / "nothing.csv"
    with pytest.raises(StartupCheckError, match=f"--train-data {missing_csv}: no such file"):
        check_data(DataConfig(train_data=str(missing_csv)))
    header_only = tmp_path / "header.csv"
    header_only.write_text("filepath\ttitle\n")
    with pytest.raises(StartupCheckError, match=f"--val-data {header_only} holds no rows"):
        check_data(DataConfig(val_data=str(header_only)))
    gone = _shards(tmp_path / "gone", [-1, -1, -1])
    with pytest.raises(StartupCheckError, match=r"--train-data: none of the 3 shard\(s\) of .*gone.* exists"):
        check_data(DataConfig(train_data=gone))
    empty = _shards(tmp_path / "empty", [0, 0, -1])
    with pytest.raises(StartupCheckError, match=r"--train-data: every existing shard of .*empty.* is empty"):
        check_data(DataConfig(train_data=empty))


def test_a_few_missing_shards_are_logged_not_fatal_and_urls_are_left_to_the_loader(tmp_path, caplog):
    some = _shards(tmp_path / "some", [512, -1, 512])
    check_data(DataConfig(train_data=f"{some}::pipe:cat /nowhere/{{0..3}}.tar::s3://bucket/{{0..3}}.tar"))
    assert "1 of 3 shards of" in caplog.text
    check_data(DataConfig(dataset_type="synthetic", train_num_samples=8))  # nothing to check


@pytest.mark.e2e
def test_missing_training_data_stops_the_run_before_the_model_is_built(tmp_path, monkeypatch):
    import training.main as trainer

    built = []
    monkeypatch.setattr(trainer, "build_model", lambda *a, **k: built.append(1))
    flags = f"--train-data {tmp_path}/train.csv --model mclip-tiny --logs {tmp_path} --name run".split()
    with pytest.raises(StartupCheckError, match="--train-data .*train.csv: no such file"):
        main(flags)
    assert built == []
