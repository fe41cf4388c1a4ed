"""Skips are counted once per sample, by cause and by split: re-reads (a worker's second pass, later epochs,
resampled shards, a bad CSV row's neighbours) never count again, unreadable shards are counted apart from samples,
a bad validation row is left out rather than replaced, and images beyond --max-image-pixels or
--max-image-aspect-ratio are skipped in training, validation and zero-shot alike, all reported in results.json."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
from PIL import Image

from training.data import DataConfig, get_data
from training.main import main
from training.params import parse_args

# 10 bad samples among 30 good digits in 3 shards, and 3 shards that cannot be read
BAD_SAMPLES = {"bad_image": 4, "no_caption": 2, "empty_caption": 2, "extreme_aspect_ratio": 2}
UNREADABLE = 3


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


STRIP = np.full((4000, 1), 200, np.uint8)  # 1 x 4000 px: a 224 px eval resize would cost 800 MB


def _bad_samples(digit: np.ndarray, shard: int) -> list[dict]:
    """Shard 0: 4 bad samples, shards 1 and 2: 3 each (10 in all)."""
    whole = _png(digit)
    kinds = [
        {"png": whole[: len(whole) // 2], "txt": "a truncated digit"},
        {"png": b"GIF89a not really", "txt": "not an image"},
        {"png": whole, "txt": " "},
        {"png": whole, "cls": b"3"},
        {"png": _png(STRIP), "txt": "a strip of one pixel"},
    ]
    order = {0: [0, 1, 4, 3], 1: [0, 2, 3], 2: [1, 2, 4]}[shard]
    return [kinds[k] for k in order]


@pytest.fixture(scope="module")
def faulty_shards(tmp_path_factory, digits) -> str:
    """Shards 0-2: 10 good MNIST digits each, bad samples between them; 3: missing; 4: not a tar; 5: 10 good digits,
    cut in the middle."""
    images, labels = digits
    folder = tmp_path_factory.mktemp("faulty")
    for s in range(3):
        with wds.TarWriter(str(folder / f"part-{s}.tar")) as writer:
            samples = [{"png": _png(images[i]), "txt": f"digit {labels[i]}, {i}"} for i in range(10 * s, 10 * s + 10)]
            for position, bad in zip((1, 4, 6, 9), _bad_samples(images[0], s)):
                samples.insert(position, bad)
            for i, sample in enumerate(samples):
                writer.write({"__key__": f"{s}-{i:03d}", **sample})
    (folder / "part-4.tar").write_bytes(b"this is not a tar file" * 40)
    with wds.TarWriter(str(folder / "whole.tar")) as writer:
        for i in range(30, 40):
            writer.write({"__key__": f"5-{i:03d}", "png": _png(images[i]), "txt": f"digit {labels[i]}, {i}"})
    whole = (folder / "whole.tar").read_bytes()
    (folder / "part-5.tar").write_bytes(whole[: len(whole) // 2])  # its first good samples, then the damage
    (folder / "whole.tar").unlink()
    return str(folder / "part-{0..5}.tar")


def _counts(info, epochs: int) -> dict[str, int]:
    for epoch in range(epochs):
        info.set_epoch(epoch)
        for _ in info.dataloader:
            pass
    return info.skipped.by_reason()


@pytest.mark.parametrize("resampled", [False, True], ids=["passes", "resampled"])
def test_each_bad_sample_and_shard_counts_once_however_often_it_is_read(
    faulty_shards, clip_tokenizer, preprocess, resampled
):
    # 60 samples an epoch from 30 good ones (+ the part of part-5 before the damage): every worker reads its
    # shards several times an epoch, for 3 epochs (resampled: draws shards with replacement)
    cfg = DataConfig(
        train_data=faulty_shards,
        train_num_samples=60,
        batch_size=5,
        workers=2,
        dataset_resampled=resampled,
        shuffle_buffer=8,
    )
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["train"]
    counts = _counts(info, epochs=3)
    unreadable = counts.pop("unreadable_shard")
    assert counts == BAD_SAMPLES if not resampled else set(counts) <= set(BAD_SAMPLES)
    assert unreadable == UNREADABLE if not resampled else 1 <= unreadable <= UNREADABLE
    for reason, n in counts.items():
        assert n <= BAD_SAMPLES[reason]  # never more than there are, however often drawn
    assert info.skipped.total == sum(counts.values()) and info.skipped.shards == unreadable
    metrics = info.skipped.metrics()
    assert metrics["skipped_samples"] == info.skipped.total and metrics["unreadable_shards"] == unreadable


def test_validation_counts_stay_the_same_over_passes(faulty_shards, clip_tokenizer, preprocess):
    cfg = DataConfig(val_data=faulty_shards, batch_size=4, workers=2)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["val"]
    first = _counts(info, epochs=1)
    assert _counts(info, epochs=2) == first == {**BAD_SAMPLES, "unreadable_shard": UNREADABLE}


@pytest.fixture
def digit_table(tmp_path, digits) -> Path:
    """A TSV of 12 MNIST digits, rows 3 and 4 naming files that are not there, row 8 a 1 x 4000 strip."""
    images, labels = digits
    rows = []
    for i in range(12):
        name = f"{i}.png"
        if i not in (3, 4):
            Image.fromarray(STRIP if i == 8 else images[i]).save(tmp_path / name)
        rows.append((name, f"digit {labels[i]}, row {i}"))
    pd.DataFrame(rows, columns=["filepath", "title"]).to_csv(tmp_path / "rows.tsv", sep="\t", index=False)
    return tmp_path / "rows.tsv"


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_validation_row_is_left_out_not_replaced(digit_table, clip_tokenizer, preprocess, workers):
    cfg = DataConfig(val_data=str(digit_table), batch_size=4, workers=workers)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["val"]
    table = pd.read_csv(digit_table, sep="\t")
    lookup = {tuple(clip_tokenizer([c])[0].tolist()): i for i, c in enumerate(table["title"])}
    seen = [lookup[tuple(t.tolist())] for _, texts, _ in info.dataloader for t in texts]
    assert sorted(seen) == [0, 1, 2, 5, 6, 7, 9, 10, 11]  # each good row once, the bad ones nowhere
    assert info.skipped.by_reason() == {"missing_image": 2, "extreme_aspect_ratio": 1}


def test_a_bad_training_row_is_replaced_but_counted_once(digit_table, clip_tokenizer, preprocess):
    # training keeps full batches (every rank gathers equal ones): the next good row stands in, for 3 epochs
    cfg = DataConfig(train_data=str(digit_table), batch_size=4, workers=2)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["train"]
    assert _counts(info, epochs=3) == {"missing_image": 2, "extreme_aspect_ratio": 1}  # row 3 is tried for row 3 too


def test_the_bound_flags_are_checked_when_parsed(capsys):
    cfg = parse_args("--max-image-pixels 1000000 --max-image-aspect-ratio 4.5".split())
    assert (cfg.data.image_bounds.max_pixels, cfg.data.image_bounds.max_aspect_ratio) == (1_000_000, 4.5)
    for flags, message in (
        ("--max-image-pixels 0", "--max-image-pixels 0 is invalid (max_image_pixels=0): use an int >= 1"),
        ("--max-image-pixels 200000000", "Pillow refuses images over 178956970 pixels"),
        ("--max-image-aspect-ratio 0.5", "--max-image-aspect-ratio 0.5 is invalid (max_image_aspect_ratio=0.5)"),
        ("--max-image-aspect-ratio inf", "--max-image-aspect-ratio inf is invalid (max_image_aspect_ratio=inf)"),
    ):
        with pytest.raises(SystemExit):
            parse_args(flags.split())
        assert message in capsys.readouterr().err


@pytest.mark.e2e
def test_skips_per_cause_and_split_reach_the_metrics_and_results(
    tmp_path, faulty_shards, digit_table, mnist_folder, one_torch_thread
):
    folder = tmp_path / "zero-shot"
    shutil.copytree(mnist_folder, folder)
    Image.fromarray(STRIP).save(folder / "7" / "strip.png")  # refused before the eval resize
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(folder / "3" / "large.png")  # 6400 px > --max-image-pixels
    (folder / "names.json").write_text(json.dumps([f"the digit {d}" for d in range(10)]))
    (folder / "templates.json").write_text(json.dumps(["a photo of {}."]))
    flags = f"--train-data {faulty_shards} --train-num-samples 60 --val-data {digit_table} --zeroshot-data {folder}"
    flags += f" --zeroshot-classnames {folder / 'names.json'} --zeroshot-templates {folder / 'templates.json'}"
    flags += " --model mclip-tiny --batch-size 5 --epochs 2 --workers 2 --precision fp32 --warmup 1 --save-frequency 0"
    flags += " --max-image-pixels 5000 --log-every-n-steps 2"
    results = main([*flags.split(), "--logs", str(tmp_path), "--name", "run"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    expected = {f"skipped_{r}": n for r, n in BAD_SAMPLES.items()}
    train = {k: v for k, v in saved["train"].items() if k.startswith("skipped_")}
    assert train == {"skipped_samples": 10, **expected} and saved["train"]["unreadable_shards"] == UNREADABLE
    val = {k: v for k, v in saved["val"].items() if k.startswith("skipped_")}
    assert val == {"skipped_samples": 3, "skipped_missing_image": 2, "skipped_extreme_aspect_ratio": 1}
    assert saved["val"]["num_samples"] == 9
    zero_shot = {k: v for k, v in saved["zeroshot"].items() if k.startswith("skipped_")}
    assert zero_shot == {"skipped_samples": 2, "skipped_extreme_aspect_ratio": 1, "skipped_too_many_pixels": 1}
    assert saved["zeroshot"]["num_images"] == 41
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["skipped_samples"] for r in rows if r["split"] == "train"]
    assert logged == sorted(logged) and logged[-1] == 10  # a running count of distinct samples, never re-counted
    assert torch.isfinite(torch.tensor(saved["val"]["val_loss"]))
