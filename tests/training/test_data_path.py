"""The data path's opt-ins and defaults: --image-draft (JPEGs decoded at a reduced scale) and pinned memory chosen
by the device (--pin-memory / --no-pin-memory), on real JPEG files."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import skimage
import torch

from open_mclip.image_ops import load_image
from open_mclip.transform import PreprocessConfig, image_transform
from training.config import TrainConfig
from training.data import get_data
from training.data.samples import decode_image_bytes
from training.devices import CudaDevice, Device
from training.distributed import World
from training.main import build_data
from training.params import parse_args

IMAGES = Path(os.path.dirname(skimage.__file__)) / "data"
RETINA, ROCKET, ASTRONAUT = IMAGES / "retina.jpg", IMAGES / "rocket.jpg", IMAGES / "astronaut.png"  # real photos


def test_draft_decodes_a_large_jpeg_at_the_smallest_scale_that_keeps_the_size():
    assert load_image(RETINA).size == (1411, 1411)
    assert load_image(RETINA, draft=(224, 224)).size == (353, 353)  # 1/4: 1/8 would give 177 < 224
    assert decode_image_bytes(RETINA.read_bytes(), draft=(224, 224)).size == (353, 353)
    assert load_image(ROCKET, draft=(224, 224)).size == (640, 427)  # 427 // 224 = 1: decoded whole
    assert load_image(ASTRONAUT, draft=(64, 64)).size == (512, 512)  # not a JPEG: no draft mode


def test_drafted_eval_pixels_stay_within_a_few_grey_levels():
    transform = image_transform(PreprocessConfig(size=224), is_train=False)
    full, drafted = transform(load_image(RETINA)), transform(load_image(RETINA, draft=transform.size))
    assert transform.size == (224, 224) and drafted.shape == full.shape == (3, 224, 224)
    difference = (drafted - full).abs()
    assert 0 < difference.mean().item() < 0.02  # measured 0.008 (normalised units; one grey level is about 0.015)


def _csv(folder: Path) -> str:
    table = folder / "train.csv"
    table.write_text(f"filepath\ttitle\n{RETINA}\ta retina\n{ROCKET}\ta rocket\n")
    return str(table)


def _first_batch(tmp_path: Path, clip_tokenizer, *flags: str) -> torch.Tensor:
    cfg = parse_args(["--train-data", _csv(tmp_path), "--batch-size", "2", "--workers", "0", *flags])
    transform = image_transform(PreprocessConfig(size=224), is_train=False)
    data = get_data(cfg.data, preprocess_train=transform, preprocess_val=transform, tokenizer=clip_tokenizer)
    images, _ = next(iter(data["train"].dataloader))  # the same seeded order in every call
    return images


def test_image_draft_flag_reaches_the_decoder_and_changes_only_large_jpegs(tmp_path, clip_tokenizer):
    plain = _first_batch(tmp_path, clip_tokenizer)
    drafted = _first_batch(tmp_path, clip_tokenizer, "--image-draft")
    changed = [not torch.equal(a, b) for a, b in zip(plain, drafted)]
    assert sorted(changed) == [False, True]  # the retina (decoded at 1/4) changes, the rocket (427 px high) does not
    assert (plain - drafted).abs().mean() < 0.02


def test_image_draft_refuses_a_transform_that_does_not_say_its_size(tmp_path, clip_tokenizer):
    cfg = parse_args(["--train-data", _csv(tmp_path), "--batch-size", "2", "--workers", "0", "--image-draft"])

    def bare(image):
        return image

    with pytest.raises(ValueError, match=r"--image-draft: the train transform \(function\)"):
        get_data(cfg.data, preprocess_train=bare, preprocess_val=bare, tokenizer=clip_tokenizer)


@pytest.mark.parametrize(
    ("device", "flags", "pinned"),
    [
        (Device(), [], False),
        (CudaDevice(0), [], True),  # built, never set up: nothing here touches CUDA
        (CudaDevice(0), ["--no-pin-memory"], False),
        (Device(), ["--pin-memory"], True),
    ],
)
def test_the_device_decides_pinning_unless_the_flag_says(tmp_path, clip_tokenizer, device, flags, pinned):
    cfg: TrainConfig = parse_args(["--train-data", _csv(tmp_path), "--batch-size", "2", "--workers", "0", *flags])
    transform = image_transform(PreprocessConfig(size=32), is_train=False)
    run = SimpleNamespace(device=device, world=World(rank=0, local_rank=0, world_size=1))
    data = build_data(cfg, run, preprocess_train=transform, preprocess_val=transform, tokenizer=clip_tokenizer)
    assert data["train"].dataloader.pin_memory is pinned
