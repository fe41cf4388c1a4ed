"""Progress of long work in the log: the training line's epoch percentage and time left (open_clip_train shows the
samples and percentage), and evaluation passes (validation, zero-shot classifiers and images) logging done, rate and
time left at every tenth of the work."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from training.main import main
from training.progress import Progress, duration, progress_note

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_logs_every_tenth_with_rate_and_time_left(caplog):
    clock = Clock()
    progress = Progress("zero-shot (imagenet) images", total=20, clock=clock, every_s=1e9)
    with caplog.at_level(logging.INFO, logger="training.progress"):
        for done in range(1, 21):
            clock.now += 0.5  # 2 batches/s
            progress.update(done)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10  # at 2, 4, ..., 20 of 20
    assert lines[1] == "zero-shot (imagenet) images:  4/20 batches (20%), 2 batches/s, 0:00:08 left"
    assert lines[-1] == "zero-shot (imagenet) images: 20/20 batches (100%), 2 batches/s, 0:00:00 left"


def test_progress_without_a_total_logs_by_time_and_rank_zero_only(caplog):
    clock = Clock()
    stream = Progress("validation", total=None, clock=clock, every_s=60)
    quiet = Progress("validation", total=10, clock=clock, enabled=False)
    with caplog.at_level(logging.INFO, logger="training.progress"):
        for done in range(1, 7):
            clock.now += 20.0
            stream.update(done)
            quiet.update(done)
    assert [r.getMessage() for r in caplog.records] == [
        "validation: 3 batches, 0.05 batches/s",
        "validation: 6 batches, 0.05 batches/s",
    ]


def test_progress_note_counts_the_rate_of_the_work_done_here():
    """A resumed epoch starts at batch 50 of 100: the rate is of the 10 batches trained since, not of 60."""
    note = progress_note(60, 100, elapsed_s=5.0, rate_done=10, unit="batches")
    assert note == " 60/100 batches (60%), 2 batches/s, 0:00:20 left"
    assert duration(3725.4) == "1:02:05"


def _csv(folder: Path, digits, *, rows: range, name: str) -> str:
    """A TSV of real MNIST digits (PNG files) with a caption each."""
    images, labels = digits
    for i in rows:
        Image.fromarray(images[i]).save(folder / f"{i}.png")
    frame = pd.DataFrame([(f"{i}.png", f"the digit {labels[i]}, number {i}") for i in rows])
    frame.columns = ["filepath", "title"]
    frame.to_csv(folder / name, sep="\t", index=False)
    return str(folder / name)


@pytest.mark.e2e
def test_a_short_run_logs_its_epoch_progress_and_each_evaluations(tmp_path, digits, mnist_folder):
    names, templates = tmp_path / "names.json", tmp_path / "templates.json"
    names.write_text(json.dumps(DIGITS)), templates.write_text(json.dumps(["a photo of {}."]))
    flags = "--model mclip-tiny --batch-size 16 --epochs 1 --warmup 1 --workers 0 --train-data".split()
    flags += [_csv(tmp_path, digits, rows=range(64), name="train.tsv")]
    flags += ["--val-data", _csv(tmp_path, digits, rows=range(100, 140), name="val.tsv")]  # 3 batches of 16
    flags += ["--zeroshot-data", str(mnist_folder), "--zeroshot-classnames", str(names)]
    flags += ["--zeroshot-templates", str(templates), "--log-every-n-steps", "1", "--precision", "fp32"]
    main([*flags, "--device", "cpu", "--logs", str(tmp_path), "--name", "run"])
    log = (tmp_path / "run" / "out.log").read_text()

    train = re.findall(
        r"train epoch 0 step (\d) \[ *(\d+)/64 samples \((\d+)%\), [\d.e+]+ samples/s, ([\d:]+) left", log
    )
    assert [(int(s), int(n), int(p)) for s, n, p, _ in train] == [(1, 16, 25), (2, 32, 50), (3, 48, 75), (4, 64, 100)]
    assert train[-1][3] == "0:00:00"
    val = re.findall(r"validation: *(\d+)/3 batches \((\d+)%\), [\d.e+]+ batches/s, [\d:]+ left", log)  # 40 rows
    assert val == [("1", "33"), ("2", "67"), ("3", "100")]
    assert "zero-shot (zeroshot) classifiers: 10/10 classes (100%)" in log
    assert "zero-shot (zeroshot) images: 1/1 batches (100%)" in log  # 41 images, batches of 256
