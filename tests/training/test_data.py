"""Data pipelines on real images: WebDataset shards of MNIST digits, a CSV of photos, synthetic pairs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch
import webdataset as wds
from PIL import Image

from open_mclip.transform import PreprocessConfig, image_transform
from training.data import DataConfig, DataInfo, get_data, resolve_dataset_type
from training.data.wds import expand_shards, shuffled


def write_digit_shards(folder: Path, digits, png, *, name: str, start: int, shards: int, per_shard: int) -> list[str]:
    """Shards ``{name}-000000.tar`` ... of consecutive digits from ``start``; returns the captions in order."""
    images, labels = digits
    folder.mkdir(parents=True, exist_ok=True)
    captions = []
    for s in range(shards):
        with wds.TarWriter(str(folder / f"{name}-{s:06d}.tar")) as writer:
            for i in range(start + s * per_shard, start + (s + 1) * per_shard):
                captions.append(f"{name} digit {labels[i]} number {i}")
                writer.write({"__key__": f"{i:06d}", "png": png(images[i]), "txt": captions[-1]})
    return captions


def decode_captions(tokens: torch.Tensor, captions: list[str], clip_tokenizer) -> list[str]:
    """The caption each row of ``tokens`` (N, 77) came from."""
    lookup = {tuple(clip_tokenizer([c])[0].tolist()): c for c in captions}
    return [lookup[tuple(row.tolist())] for row in tokens]


def run_epoch(info: DataInfo, captions: list[str], clip_tokenizer) -> list[str]:
    """Iterate a loader once; checks batch shapes and returns the captions in the order they came."""
    seen = []
    for images, texts, *_ in info.dataloader:  # validation batches also carry language tags
        assert images.dtype == torch.float32 and texts.dtype == torch.int64
        assert images.shape[1:] == (3, 28, 28) and texts.shape == (images.shape[0], 77)
        seen += decode_captions(texts, captions, clip_tokenizer)
    return seen


def _get(cfg: DataConfig, clip_tokenizer, preprocess, **kwargs) -> dict[str, DataInfo]:
    return get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer, **kwargs)


@pytest.fixture(scope="module")
def eight_shards(tmp_path_factory, digits, png) -> tuple[str, list[str]]:
    folder = tmp_path_factory.mktemp("shards")
    captions = write_digit_shards(folder, digits, png, name="mnist", start=0, shards=8, per_shard=8)
    return str(folder / "mnist-{000000..000007}.tar"), captions


def test_each_sample_once_per_epoch_across_ranks_and_workers(eight_shards, clip_tokenizer, preprocess, digits):
    spec, captions = eight_shards
    cfg = DataConfig(train_data=spec, train_num_samples=64, batch_size=4, workers=2, seed=3)
    infos = [_get(cfg, clip_tokenizer, preprocess, rank=r, world_size=2)["train"] for r in range(2)]
    orders = []
    for epoch in (0, 1):
        per_rank = []
        for info in infos:
            assert (info.num_samples, info.num_batches, len(info.dataloader)) == (64, 8, 8)
            info.set_epoch(epoch)
            per_rank.append(run_epoch(info, captions, clip_tokenizer))
        assert [len(seen) for seen in per_rank] == [32, 32]  # 8 full batches of 4 on each rank
        everything = per_rank[0] + per_rank[1]
        assert sorted(everything) == sorted(captions)  # none twice, none missing
        orders.append(everything)
    assert orders[0] != orders[1]  # set_epoch reshuffles shards and samples
    # the images are the digits their captions name
    images, texts = next(iter(infos[0].dataloader))
    for image, caption in zip(images, decode_captions(texts, captions, clip_tokenizer)):
        index = int(caption.rsplit(" ", 1)[1])
        torch.testing.assert_close(image, preprocess(Image.fromarray(digits[0][index])), rtol=0, atol=0)


def test_sample_count_comes_from_sizes_json(tmp_path, digits, png, clip_tokenizer, preprocess):
    captions = write_digit_shards(tmp_path, digits, png, name="d", start=100, shards=4, per_shard=6)
    spec = str(tmp_path / "d-{000000..000003}.tar")
    cfg = DataConfig(train_data=spec, batch_size=4, workers=0)
    with pytest.raises(ValueError, match="train_num_samples"):
        _get(cfg, clip_tokenizer, preprocess)
    (tmp_path / "sizes.json").write_text(json.dumps({f"d-{s:06d}.tar": 6 for s in range(4)}))
    info = _get(cfg, clip_tokenizer, preprocess)["train"]
    assert (info.num_samples, info.num_batches) == (24, 6)
    assert sorted(run_epoch(info, captions, clip_tokenizer)) == sorted(captions)


def test_too_few_shards_for_the_workers_is_an_error(eight_shards, clip_tokenizer, preprocess):
    cfg = DataConfig(train_data=eight_shards[0], train_num_samples=64, batch_size=4, workers=3)
    with pytest.raises(ValueError, match="8 shard.*3 worker.*3 rank"):
        _get(cfg, clip_tokenizer, preprocess, rank=0, world_size=3)


def test_validation_shards_are_read_whole_in_order(eight_shards, clip_tokenizer, preprocess):
    spec, captions = eight_shards
    cfg = DataConfig(val_data=spec, val_num_samples=64, batch_size=5, workers=2)
    data = _get(cfg, clip_tokenizer, preprocess, rank=1, world_size=2)  # validation ignores the rank split
    assert list(data) == ["val"] and data["val"].num_batches == 13
    seen = run_epoch(data["val"], captions, clip_tokenizer)
    assert sorted(seen) == sorted(captions)
    worker0 = [c for c in seen if int(c.rsplit(" ", 1)[1]) // 8 % 2 == 0]  # shards 0, 2, 4, 6
    assert worker0 == sorted(worker0, key=lambda c: int(c.rsplit(" ", 1)[1]))


def test_resampled_stream_is_reproducible_per_epoch(eight_shards, clip_tokenizer, preprocess):
    spec, captions = eight_shards
    cfg = DataConfig(train_data=spec, train_num_samples=48, batch_size=4, workers=2, dataset_resampled=True, seed=7)

    def stream(*, epoch: int = 0, set_epoch: int | None = None, rank: int = 0) -> list[str]:
        info = _get(cfg, clip_tokenizer, preprocess, epoch=epoch, rank=rank, world_size=2)["train"]
        if set_epoch is not None:
            info.set_epoch(set_epoch)
        assert (info.num_samples, info.num_batches) == (48, 6)
        return run_epoch(info, captions, clip_tokenizer)

    first = stream()
    assert len(first) == 24 and first == stream()  # same (seed, epoch, rank): same samples, same order
    later = stream(set_epoch=3)
    assert later != first and later == stream(epoch=3)  # a run resumed at epoch 3 sees epoch 3's stream
    assert stream(rank=1) != first
    assert max(Counter(first + later).values()) > 1  # shards are drawn with replacement


def test_upsampling_factors_set_the_mix(tmp_path, digits, png, clip_tokenizer, preprocess):
    a = write_digit_shards(tmp_path, digits, png, name="a", start=0, shards=2, per_shard=4)
    b = write_digit_shards(tmp_path, digits, png, name="b", start=8, shards=2, per_shard=4)
    spec = f"{tmp_path}/a-{{000000..000001}}.tar::{tmp_path}/b-{{000000..000001}}.tar"
    cfg = DataConfig(
        train_data=spec,
        train_num_samples=640,
        batch_size=32,
        workers=2,
        dataset_resampled=True,
        train_data_upsampling_factors="1::3",
        shuffle_buffer=50,
    )
    seen = run_epoch(_get(cfg, clip_tokenizer, preprocess)["train"], a + b, clip_tokenizer)
    share_b = sum(c.startswith("b ") for c in seen) / len(seen)
    assert len(seen) == 640 and abs(share_b - 0.75) < 0.1, share_b  # 160 shard draws: std of the share 0.034
    only_a = DataConfig(**{**cfg.__dict__, "train_data_upsampling_factors": "1::0", "train_num_samples": 64})
    assert all(
        c.startswith("a ") for c in run_epoch(_get(only_a, clip_tokenizer, preprocess)["train"], a + b, clip_tokenizer)
    )


def test_bad_upsampling_factors_are_errors(eight_shards, clip_tokenizer, preprocess):
    spec = eight_shards[0]
    with pytest.raises(ValueError, match="dataset_resampled"):
        _get(
            DataConfig(train_data=spec, train_num_samples=8, train_data_upsampling_factors="1"),
            clip_tokenizer,
            preprocess,
        )
    with pytest.raises(ValueError, match="one non-negative number per"):
        expand_shards(f"{spec}::{spec}", upsampling_factors="1::2::3")
    shards, weights = expand_shards("x/{0..2}.tar::y/{0..1}.tar", upsampling_factors="1::2.5")
    assert shards == ["x/0.tar", "x/1.tar", "x/2.tar", "y/0.tar", "y/1.tar"] and weights == [1, 1, 1, 2.5, 2.5]


def test_shuffle_buffer_keeps_every_item():
    import random

    out = list(shuffled(iter(range(1000)), rng=random.Random(0), bufsize=100))
    assert sorted(out) == list(range(1000)) and out != list(range(1000))
    assert all(x < i + 100 for i, x in enumerate(out))  # an item leaves only after it came in


@pytest.fixture(scope="module")
def photo_csv(tmp_path_factory) -> tuple[Path, dict[str, Image.Image]]:
    """A comma-separated CSV of real photos (PNG, in a subfolder, relative and absolute paths)."""
    folder = tmp_path_factory.mktemp("csv")
    (folder / "images").mkdir()
    photos = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "horse"):
        photo = Image.fromarray(
            np.asarray(getattr(skimage.data, name)(), dtype=np.uint8) * (255 if name == "horse" else 1)
        )
        photos[f"a photo of the {name}"] = photo.resize((40, 32))
        photos[f"a photo of the {name}"].save(folder / "images" / f"{name}.png")
    paths = [f"images/{c.rsplit(' ', 1)[1]}.png" for c in photos]
    paths[1] = str(folder / paths[1])  # an absolute path stays as it is
    pd.DataFrame({"path": paths, "caption": list(photos)}).to_csv(folder / "photos.csv", index=False)
    return folder / "photos.csv", photos


def test_csv_loader_gives_the_right_images_and_captions(photo_csv, clip_tokenizer, preprocess):
    path, photos = photo_csv
    cfg = DataConfig(val_data=str(path), csv_separator=",", csv_img_key="path", csv_caption_key="caption", batch_size=4)
    cfg.workers = 0
    info = _get(cfg, clip_tokenizer, preprocess)["val"]
    assert (info.num_samples, info.num_batches) == (6, 2)
    batches = list(info.dataloader)
    assert [len(b[0]) for b in batches] == [4, 2]  # validation keeps the last partial batch
    images, texts = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert torch.equal(texts, clip_tokenizer(list(photos)))  # in file order
    for image, photo in zip(images, photos.values()):
        torch.testing.assert_close(image, preprocess(photo), rtol=0, atol=0)
    assert info.skipped.total == 0


def test_csv_training_split_and_shuffle(photo_csv, clip_tokenizer, preprocess):
    path, photos = photo_csv
    captions = list(photos)
    cfg = DataConfig(
        train_data=str(path),
        csv_separator=",",
        csv_img_key="path",
        csv_caption_key="caption",
        batch_size=1,
        workers=2,
        seed=1,
    )
    ranks = [_get(cfg, clip_tokenizer, preprocess, rank=r, world_size=2)["train"] for r in range(2)]
    assert [(i.num_samples, i.num_batches) for i in ranks] == [(6, 3), (6, 3)]
    epoch0 = [run_epoch(info, captions, clip_tokenizer) for info in ranks]
    assert sorted(epoch0[0] + epoch0[1]) == sorted(captions)
    orders = {tuple(run_epoch(ranks[0], captions, clip_tokenizer))}
    for epoch in range(1, 6):
        ranks[0].set_epoch(epoch)
        orders.add(tuple(run_epoch(ranks[0], captions, clip_tokenizer)))
    assert tuple(epoch0[0]) in orders and len(orders) > 1  # same epoch: same order; new epochs: new orders
    single = _get(DataConfig(**{**cfg.__dict__, "batch_size": 4}), clip_tokenizer, preprocess)["train"]
    assert single.num_batches == 1 and len(run_epoch(single, captions, clip_tokenizer)) == 4  # partial batch dropped


def test_csv_with_a_missing_column_names_it(photo_csv, clip_tokenizer, preprocess):
    cfg = DataConfig(train_data=str(photo_csv[0]), csv_img_key="path", csv_caption_key="caption")  # tab separator
    with pytest.raises(ValueError, match="column 'path' is not in .*csv_separator"):
        _get(cfg, clip_tokenizer, preprocess)


def test_synthetic_data(clip_tokenizer):
    preprocess = image_transform(PreprocessConfig(size=32), is_train=True)
    cfg = DataConfig(dataset_type="synthetic", train_num_samples=10, val_num_samples=3, batch_size=4, workers=0)
    cfg.synthetic_image_size = 48
    data = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer)
    assert (data["train"].num_samples, data["train"].num_batches, data["val"].num_batches) == (10, 2, 1)
    batches = list(data["train"].dataloader)
    assert [tuple(b[0].shape) for b in batches] == [(4, 3, 32, 32)] * 2 and batches[0][1].shape == (4, 77)
    texts = torch.cat([b[1] for b in batches])
    assert len({tuple(t.tolist()) for t in texts}) == 8 and (texts[:, 1] > 0).all()  # random, non-empty captions
    dataset = data["train"].dataloader.dataset
    image, caption = dataset.raw(3)
    assert image.size == (48, 48) and caption.startswith("a photo of ") and dataset.raw(3)[1] == caption
    assert np.asarray(image).std() > 50  # noise, not a blank image
    with pytest.raises(ValueError, match="train-num-samples"):
        get_data(
            DataConfig(dataset_type="synthetic"),
            preprocess_train=preprocess,
            preprocess_val=preprocess,
            tokenizer=clip_tokenizer,
        )


def test_config_and_argument_errors(clip_tokenizer, preprocess):
    assert resolve_dataset_type("a/{0..3}.tar::b/x.tar", "auto") == "webdataset"
    assert resolve_dataset_type("pairs.TSV", "auto") == "csv"
    with pytest.raises(ValueError, match="'parquet'"):
        resolve_dataset_type("data.parquet", "auto")
    with pytest.raises(ValueError, match="dataset_type='images'"):
        DataConfig(dataset_type="images")
    with pytest.raises(ValueError, match="batch_size=0"):
        DataConfig(batch_size=0)
    with pytest.raises(ValueError, match="rank=2"):
        _get(
            DataConfig(dataset_type="synthetic", train_num_samples=4), clip_tokenizer, preprocess, rank=2, world_size=2
        )
    with pytest.raises(TypeError, match="tokenizer"):
        get_data(DataConfig(), preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=None)
    assert (
        get_data(DataConfig(), preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=clip_tokenizer) == {}
    )
