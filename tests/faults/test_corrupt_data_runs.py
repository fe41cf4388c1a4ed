"""Corrupt data of every kind among real MNIST shards, through the real training.main: each bad sample is skipped
and counted once by cause over two epochs, unreadable shards apart, and the run trains to finite weights. The bad
samples are tests/training/test_data_corrupt.py's (truncated JPEG, a PDF named .jpg, empty and missing captions)
and those that test_skip_counts.py and the loaders' causes add."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from tests.training.test_data_corrupt import bad_samples

from training.checkpoint import load, model_state, non_finite
from training.config import DataConfig
from training.main import main
from training.startup import StartupCheckError, check_data

STRIP = np.full((4000, 1), 200, np.uint8)  # a 1 x 4000 px image: the eval resize of its short side costs 800 MB


def _encode(array: np.ndarray, kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=kind)
    return buffer.getvalue()


def more_bad_samples(digit: np.ndarray) -> list[tuple[str, dict]]:
    """(cause, sample) for the kinds test_data_corrupt.py does not build."""
    whole = _encode(digit, "PNG")
    return [
        ("bad_image", {"png": whole[: len(whole) // 2], "txt": "a truncated png"}),
        ("bad_image", {"png": b"GIF89a not really", "txt": "not an image"}),
        ("extreme_aspect_ratio", {"png": _encode(STRIP, "PNG"), "txt": "a strip of one pixel"}),
        ("too_many_pixels", {"png": _encode(np.zeros((100, 100), np.uint8), "PNG"), "txt": "10,000 px"}),
        ("bad_caption", {"png": whole, "txt": b"\xff\xfe\xfa not utf-8"}),
        ("no_image", {"txt": "a caption without its image"}),
    ]


def _read_shard(path: Path) -> list[dict]:
    samples: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, _, ext = member.name.partition(".")
            samples.setdefault(key, {"__key__": key})[ext] = tar.extractfile(member).read()
    return list(samples.values())


@pytest.fixture(scope="module")
def corrupt_mnist(tmp_path_factory, mnist_shards, digits) -> tuple[str, dict[str, int]]:
    """The 4 MNIST training shards with 10 bad samples spread among them, then a shard that is not a tar, one cut
    in the middle and one missing; the brace pattern and the expected counts by cause."""
    digit = digits[0][0]
    jpeg = _encode(digit, "JPEG")
    causes = ["bad_image", "bad_image", "empty_caption", "no_caption"]  # bad_samples' order
    bad = list(zip(causes, bad_samples({"a digit": jpeg}))) + more_bad_samples(digit)
    folder = tmp_path_factory.mktemp("corrupt_mnist")
    for s in range(4):
        samples = _read_shard(mnist_shards / "train" / f"shard-{s:06d}.tar")
        for position, (_, sample) in zip((2, 7, 11), bad[s::4]):
            samples.insert(position, {"__key__": f"bad-{s}-{position}", **sample})
        with wds.TarWriter(str(folder / f"part-{s}.tar")) as writer:
            for sample in samples:
                writer.write(sample)
    (folder / "part-4.tar").write_bytes(b"this is not a tar file" * 40)
    whole = (mnist_shards / "train" / "shard-000000.tar").read_bytes()
    (folder / "part-5.tar").write_bytes(whole[:700])  # cut inside its first entry: no whole sample in it
    expected: dict[str, int] = {}
    for cause, _ in bad:
        expected[cause] = expected.get(cause, 0) + 1
    return str(folder / "part-{0..6}.tar"), expected  # part-6.tar does not exist


@pytest.mark.e2e
def test_every_kind_of_bad_sample_and_shard_is_skipped_and_counted_once_and_training_goes_on(
    tmp_path, corrupt_mnist, train_flags, one_torch_thread
):
    pattern, expected = corrupt_mnist
    flags = train_flags(logs=tmp_path, name="run", extra="--max-image-pixels 5000 --workers 2 --log-every-n-steps 4")
    flags[flags.index("--train-data") + 1] = pattern
    results = main(flags)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["train"]
    counts = {
        k.removeprefix("skipped_"): v for k, v in saved.items() if k.startswith("skipped_") and k != "skipped_samples"
    }
    assert counts == expected and saved["skipped_samples"] == sum(expected.values()) == 10
    assert saved["unreadable_shards"] == 3  # not a tar, cut in the middle, missing
    assert results["train"]["step"] == 16 and saved["nonfinite_steps_total"] == 0
    assert not non_finite(model_state(load(tmp_path / "run" / "checkpoints" / "epoch_2.pt")))
    assert torch.isfinite(torch.tensor(saved["loss"]))


def test_an_empty_csv_file_is_refused_at_start_up_naming_it(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")  # not even a header (pandas alone says "No columns to parse from file")
    with pytest.raises(StartupCheckError, match=f"--train-data {empty} holds no rows"):
        check_data(DataConfig(train_data=str(empty)))
