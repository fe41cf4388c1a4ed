"""Bad samples among real photos are skipped, counted by reason across worker processes, and logged; never fatal."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch
import webdataset as wds
from PIL import Image

from training.data import DataConfig, DataInfo, get_data

EXPECTED_SKIPS = {"bad_image": 2, "no_caption": 1, "empty_caption": 1}


@pytest.fixture(scope="module")
def photo_jpegs() -> dict[str, bytes]:
    """16 distinct real photo crops (astronaut, cat, coffee, rocket), 48 px, as JPEG bytes, by caption."""
    jpegs = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        photo = Image.fromarray(getattr(skimage.data, name)())
        for k in range(4):
            side = min(photo.size) // (k + 1)
            crop = photo.crop((0, 0, side, side)).resize((48, 48))
            buffer = io.BytesIO()
            crop.save(buffer, format="JPEG", quality=90)
            jpegs[f"{name} crop {k}"] = buffer.getvalue()
    return jpegs


def bad_samples(jpegs: dict[str, bytes]) -> list[dict]:
    """A truncated JPEG, a non-image file under an image name, an empty caption and a sample with no caption."""
    whole = next(iter(jpegs.values()))
    return [
        {"jpg": whole[: len(whole) // 2], "txt": "a truncated photo"},
        {"jpg": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "txt": "a pdf named like a photo"},
        {"jpg": whole, "txt": "  \n "},
        {"jpg": whole, "cls": b"3"},
    ]


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory, photo_jpegs) -> str:
    """4 shards of 4 good photos each, with one bad sample in the middle of each shard."""
    folder = tmp_path_factory.mktemp("corrupt")
    good = list(photo_jpegs.items())
    for s, bad in enumerate(bad_samples(photo_jpegs)):
        with wds.TarWriter(str(folder / f"part-{s:06d}.tar")) as writer:
            samples = [{"jpg": jpeg, "txt": caption} for caption, jpeg in good[4 * s : 4 * s + 4]]
            samples.insert(2, bad)
            for i, sample in enumerate(samples):
                writer.write({"__key__": f"{s}-{i}", **sample})
    return str(folder / "part-{000000..000003}.tar")


def run_epoch(info: DataInfo, jpegs: dict[str, bytes], clip_tokenizer, preprocess) -> list[str]:
    """Iterate once; every image must be the good photo its caption names. Returns the captions seen."""
    lookup = {tuple(clip_tokenizer([c])[0].tolist()): c for c in jpegs}
    seen = []
    for images, texts, *_ in info.dataloader:  # validation batches also carry language tags
        for image, tokens in zip(images, texts):
            caption = lookup[tuple(tokens.tolist())]  # a KeyError here would mean a bad sample got through
            expected = preprocess(Image.open(io.BytesIO(jpegs[caption])))
            torch.testing.assert_close(image, expected, rtol=0, atol=0)
            seen.append(caption)
    return seen


def test_train_loader_skips_and_counts_bad_samples(corrupt_shards, photo_jpegs, clip_tokenizer, preprocess):
    # shuffle_buffer=1 keeps the write order, so each worker meets its bad samples before its quota is filled
    cfg = DataConfig(train_data=corrupt_shards, train_num_samples=16, batch_size=4, workers=2, shuffle_buffer=1)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["train"]
    assert info.num_batches == 4
    seen = run_epoch(info, photo_jpegs, clip_tokenizer, preprocess)
    assert sorted(seen) == sorted(photo_jpegs)  # every good sample once, nothing else
    assert info.skipped.by_reason() == EXPECTED_SKIPS and info.skipped.total == 4  # counted in the workers


def test_shuffled_train_loader_gives_only_good_samples(corrupt_shards, photo_jpegs, clip_tokenizer, preprocess):
    cfg = DataConfig(train_data=corrupt_shards, train_num_samples=32, batch_size=4, workers=2)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["train"]
    seen = run_epoch(info, photo_jpegs, clip_tokenizer, preprocess)
    assert len(seen) == 32 and set(seen) == set(photo_jpegs)  # two passes over the good samples
    assert set(info.skipped.by_reason()) == set(EXPECTED_SKIPS) and 4 <= info.skipped.total <= 8


def test_validation_loader_counts_every_bad_sample(corrupt_shards, photo_jpegs, clip_tokenizer, preprocess):
    cfg = DataConfig(val_data=corrupt_shards, batch_size=5, workers=2)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["val"]
    assert sorted(run_epoch(info, photo_jpegs, clip_tokenizer, preprocess)) == sorted(photo_jpegs)
    assert info.skipped.by_reason() == EXPECTED_SKIPS
    info.skipped.reset()
    assert info.skipped.total == 0 and info.skipped.by_reason() == {}


def test_unreadable_shards_and_stray_files(tmp_path, photo_jpegs, clip_tokenizer, preprocess):
    good = list(photo_jpegs.items())
    with wds.TarWriter(str(tmp_path / "s-0.tar")) as writer:
        writer.write({"__key__": "README", "md": b"# notes about this shard"})  # not a sample: no image
        for i, (caption, jpeg) in enumerate(good[:2]):
            writer.write({"__key__": f"good{i}", "jpg": jpeg, "txt": caption})
        writer.write({"__key__": "meta", "jpg": good[2][1], "json": {"caption": good[2][0], "width": 48}})
    (tmp_path / "s-1.tar").write_bytes(b"this is not a tar file" * 50)
    # s-2.tar is missing
    shards = f"{tmp_path}/s-{{0..2}}.tar"
    cfg = DataConfig(val_data=shards, val_num_samples=3, batch_size=2, workers=0)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["val"]
    assert sorted(run_epoch(info, photo_jpegs, clip_tokenizer, preprocess)) == sorted(c for c, _ in good[:3])
    assert info.skipped.by_reason() == {"no_image": 1, "unreadable_shard": 2}


def test_skips_are_logged_for_the_first_few_only(tmp_path, photo_jpegs, clip_tokenizer, preprocess, caplog):
    jpeg = next(iter(photo_jpegs.values()))
    with wds.TarWriter(str(tmp_path / "e-0.tar")) as writer:
        for i in range(7):
            writer.write({"__key__": f"empty{i}", "jpg": jpeg, "txt": ""})
        writer.write({"__key__": "good", "jpg": jpeg, "txt": "a photo"})
    cfg = DataConfig(val_data=str(tmp_path / "e-0.tar"), batch_size=1, workers=0)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["val"]
    with caplog.at_level(logging.WARNING, logger="training"):
        assert len(list(info.dataloader)) == 1
    messages = [r.getMessage() for r in caplog.records if "skipped a sample" in r.getMessage()]
    assert len(messages) == 5 and all("empty_caption" in m for m in messages)
    assert "empty0" in messages[0] and "not logged" in messages[-1]
    assert info.skipped.by_reason() == {"empty_caption": 7}


def test_csv_rows_with_bad_images_or_captions(tmp_path, photo_jpegs, clip_tokenizer, preprocess):
    good = list(photo_jpegs.items())[:8]
    rows = []
    for i, (caption, jpeg) in enumerate(good):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg)
        rows.append((f"{i}.jpg", caption))
    whole = good[0][1]
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "notes.jpg").write_text("plain text, not an image")
    for position, row in (
        (1, ("cut.jpg", "a truncated photo")),
        (3, ("notes.jpg", "text file")),
        (5, ("0.jpg", "")),
        (7, ("gone.jpg", "a photo that was deleted")),
    ):
        rows.insert(position, row)
    pd.DataFrame(rows, columns=["filepath", "title"]).to_csv(tmp_path / "pairs.tsv", sep="\t", index=False)
    cfg = DataConfig(train_data=str(tmp_path / "pairs.tsv"), batch_size=4, workers=2)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["train"]
    assert (info.num_samples, info.num_batches) == (12, 3)  # a bad row is replaced: batches keep their size
    seen = run_epoch(info, photo_jpegs, clip_tokenizer, preprocess)
    assert len(seen) == 12 and set(seen) == {c for c, _ in good}
    assert info.skipped.by_reason() == {"bad_image": 2, "missing_image": 1, "empty_caption": 1}


def test_an_all_bad_csv_fails_clearly(tmp_path, clip_tokenizer, preprocess):
    (tmp_path / "x.png").write_bytes(np.zeros(64, dtype=np.uint8).tobytes())
    pd.DataFrame({"filepath": ["x.png"], "title": ["zeros"]}).to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    cfg = DataConfig(val_data=str(Path(tmp_path) / "bad.tsv"), batch_size=1, workers=0)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["val"]
    with pytest.raises(RuntimeError, match="no row of .*bad.tsv"):
        next(iter(info.dataloader))


@pytest.mark.slow  # spawned loader workers import torch: 5 s
def test_counts_survive_spawned_workers(corrupt_shards, photo_jpegs, clip_tokenizer, preprocess):
    # the trainer may start workers with spawn (no shared address space): the counter must still add up
    cfg = DataConfig(val_data=corrupt_shards, batch_size=4, workers=2)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)["val"]
    loader = torch.utils.data.DataLoader(
        info.dataloader.dataset, batch_size=4, num_workers=2, multiprocessing_context="spawn"
    )
    assert sum(len(images) for images, *_ in loader) == 16
    assert info.skipped.by_reason() == EXPECTED_SKIPS
