"""Preprocessing: parity with open_clip's transforms on real photos, mode conversion, train crops, loading."""

from __future__ import annotations

import pickle
import subprocess
import sys

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from open_mclip.transform import (
    AugmentationConfig,
    PreprocessConfig,
    RandomResizedCrop,
    image_transform,
    load_image,
    to_rgb,
)

open_clip_transform = pytest.importorskip("open_clip.transform")

GRACE_HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """The real photos the suite compares on; horse is a binary mask, so it goes in as 8-bit greyscale."""
    images = {name: Image.fromarray(getattr(skimage.data, name)()) for name in ("astronaut", "chelsea", "coffee")}
    images["rocket"] = Image.fromarray(skimage.data.rocket())
    horse = skimage.data.horse()
    assert horse.dtype == np.bool_ and horse.ndim == 2
    images["horse"] = Image.fromarray(horse.astype(np.uint8) * 255)
    assert images["horse"].mode == "L"
    sample = load_sample_images()
    for filename, array in zip(sample.filenames, sample.images):
        images[filename.rsplit("/", 1)[-1]] = Image.fromarray(array)
    images["grace_hopper.jpg"] = load_image(GRACE_HOPPER)
    assert {"china.jpg", "flower.jpg"} <= set(images)
    return images


@pytest.fixture(scope="module")
def grey_photo() -> np.ndarray:
    return np.asarray(Image.fromarray(skimage.data.astronaut()).convert("L").resize((128, 128)))


def _reference(size, mode: str, interpolation: str, fill: int = 0):
    cfg = open_clip_transform.PreprocessCfg(size=size, resize_mode=mode, interpolation=interpolation, fill_color=fill)
    return open_clip_transform.image_transform_v2(cfg, is_train=False)


def _ours(size, mode: str, interpolation: str, fill: int = 0):
    cfg = PreprocessConfig(size=size, resize_mode=mode, interpolation=interpolation, fill_color=fill)
    return image_transform(cfg, is_train=False)


# ------------------------------------------------------------------------------------------ eval parity


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [224, (256, 192), 336])
@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_eval_matches_open_clip_on_real_photos(photos, resize_mode, size, interpolation):
    reference, ours = _reference(size, resize_mode, interpolation), _ours(size, resize_mode, interpolation)
    height, width = (size, size) if isinstance(size, int) else size
    for name, image in photos.items():
        expected, got = reference(image), ours(image)
        assert got.shape == (3, height, width) and got.dtype == torch.float32, name
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("fill", [0, 200])
@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_eval_matches_open_clip_on_image_smaller_than_crop(photos, resize_mode, fill):
    tiny = Image.fromarray(np.asarray(photos["astronaut"])[::80, ::110].copy())  # 7 x 5
    for size in (224, (256, 192)):
        got = _ours(size, resize_mode, "bicubic", fill)(tiny)
        torch.testing.assert_close(got, _reference(size, resize_mode, "bicubic", fill)(tiny), atol=1e-5, rtol=0)
    if resize_mode == "longest":  # 7 x 5 scaled to 256 x 183, padded to 256 x 192: edge columns hold the fill
        pad_value = (fill / 255 - got.new_tensor(PreprocessConfig().mean)) / got.new_tensor(PreprocessConfig().std)
        torch.testing.assert_close(got[:, :, 0], pad_value[:, None].expand(3, got.shape[1]))
        torch.testing.assert_close(got[:, :, -1], pad_value[:, None].expand(3, got.shape[1]))


def test_opaque_rgba_matches_open_clip_on_rgb(photos):
    image = photos["chelsea"]
    rgba = image.convert("RGBA")
    assert np.all(np.asarray(rgba)[..., 3] == 255)
    for mode in ("shortest", "longest"):
        torch.testing.assert_close(_ours(224, mode, "bicubic")(rgba), _reference(224, mode, "bicubic")(image))


def test_transform_rejects_non_image_and_pickles(photos):
    transform = _ours(224, "shortest", "bicubic")
    with pytest.raises(TypeError, match="ndarray"):
        transform(np.asarray(photos["coffee"]))
    clone = pickle.loads(pickle.dumps(transform))  # DataLoader workers need this
    assert torch.equal(clone(photos["coffee"]), transform(photos["coffee"]))
    assert "ResizeShortestSide(size=224" in repr(transform) and "CenterCropOrPad" in repr(transform)


# ------------------------------------------------------------------------------------- mode conversion


def test_rgb_passes_through_unchanged(photos):
    assert to_rgb(photos["coffee"]) is photos["coffee"]


def test_alpha_is_composited_over_white(photos):
    rgb = np.asarray(photos["astronaut"].resize((64, 64)))
    alpha = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (64, 1))  # transparent left, opaque right
    out = np.asarray(to_rgb(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))).astype(float)
    expected = rgb * (alpha[..., None] / 255) + 255 * (1 - alpha[..., None] / 255)
    assert np.abs(out - expected).max() <= 1
    assert np.all(out[:, 0] == 255) and np.array_equal(out[:, -1], rgb[:, -1])
    black = np.asarray(to_rgb(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), background=(0, 0, 0)))
    assert np.all(black[:, 0] == 0)


def test_grey_alpha_and_palette_alpha(grey_photo):
    alpha = np.zeros_like(grey_photo)
    alpha[:, 64:] = 255
    out = np.asarray(to_rgb(Image.fromarray(np.dstack([grey_photo, alpha]), "LA")))
    assert np.all(out[:, :64] == 255)
    assert np.array_equal(out[:, 64:], np.repeat(grey_photo[:, 64:, None], 3, axis=2))
    rgba = Image.fromarray(np.dstack([np.repeat(grey_photo[..., None], 3, axis=2), alpha]), "RGBA")
    pa = rgba.convert("PA")
    assert pa.mode == "PA"
    out = np.asarray(to_rgb(pa))
    assert np.all(out[:, :64] == 255)
    assert np.array_equal(out[:, 64:], np.asarray(pa.convert("RGB"))[:, 64:])


def test_palette_with_and_without_transparency(photos):
    palette = photos["chelsea"].resize((96, 64)).quantize(colors=32)
    assert palette.mode == "P"
    assert np.array_equal(np.asarray(to_rgb(palette)), np.asarray(palette.convert("RGB")))
    index = palette.getpixel((0, 0))
    palette.info["transparency"] = index
    out = np.asarray(to_rgb(palette))
    hidden = np.asarray(palette) == index
    assert hidden.any() and not hidden.all()
    assert np.all(out[hidden] == 255)
    assert np.array_equal(out[~hidden], np.asarray(palette.convert("RGB"))[~hidden])


def test_greyscale_binary_and_cmyk(photos, grey_photo):
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(grey_photo))), np.repeat(grey_photo[..., None], 3, 2))
    binary = to_rgb(Image.fromarray(grey_photo > 128))
    assert binary.mode == "RGB" and set(np.unique(np.asarray(binary))) == {0, 255}
    rgb = photos["coffee"].resize((80, 60))
    assert np.array_equal(np.asarray(to_rgb(rgb.convert("CMYK"))), np.asarray(rgb))


@pytest.mark.parametrize("mode", ["YCbCr", "LAB", "HSV"])
def test_colour_spaces_come_back_close(photos, mode):
    """8-bit round trips through these spaces lose a little; a wrong conversion would be far off."""
    rgb = photos["coffee"].resize((80, 60))
    error = np.abs(np.asarray(to_rgb(rgb.convert(mode))).astype(int) - np.asarray(rgb).astype(int))
    assert error.shape == (60, 80, 3)
    assert error.mean() < 2 and error.max() <= 8


def test_sixteen_bit_greyscale_is_rescaled_not_clipped(grey_photo):
    wide = grey_photo.astype(np.uint16) * 256 + 100  # a photo shifted into 16 bits, low byte not zero
    images = [
        Image.fromarray(wide),  # I;16 (little-endian)
        Image.frombytes("I;16B", wide.shape[::-1], wide.astype(">u2").tobytes()),
        Image.fromarray(wide.astype(np.int32)),  # I, 16-bit values
    ]
    assert [image.mode for image in images] == ["I;16", "I;16B", "I"]
    clipped = np.asarray(images[0].convert("RGB"))  # Pillow's own convert clips at 255: nearly white
    assert clipped.mean() > 200 and grey_photo.mean() < 130
    for image in images:
        out = np.asarray(to_rgb(image)).astype(int)
        assert np.abs(out - grey_photo[..., None]).max() <= 1, image.mode


def test_integer_and_float_greyscale(grey_photo):
    as_int = Image.fromarray(grey_photo.astype(np.int32))
    assert as_int.mode == "I"
    assert np.array_equal(np.asarray(to_rgb(as_int))[..., 0], grey_photo)
    unit = Image.fromarray(grey_photo.astype(np.float32) / 255)
    assert unit.mode == "F"
    assert np.abs(np.asarray(to_rgb(unit)).astype(int) - grey_photo[..., None]).max() <= 1
    wide = Image.fromarray(grey_photo.astype(np.float32) * 10 - 500)  # outside every usual range: stretched
    out = np.asarray(to_rgb(wide))
    assert out.min() == 0 and out.max() == 255
    assert np.corrcoef(out[..., 0].ravel(), grey_photo.ravel())[0, 1] > 0.999


# ---------------------------------------------------------------------------------------------- train


def _train(size=224, **aug):
    return image_transform(PreprocessConfig(size=size), is_train=True, aug_cfg=AugmentationConfig(**aug))


def test_train_shape_and_reproducibility(photos):
    transform = _train(size=(256, 192), color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_prob=0.8, gray_scale_prob=0.2)
    torch.manual_seed(0)
    first = transform(photos["rocket"])
    torch.manual_seed(0)
    again = transform(photos["rocket"])
    torch.manual_seed(1)
    other = transform(photos["rocket"])
    assert first.shape == (3, 256, 192) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert not torch.allclose(first, other, atol=1e-3)


_JITTER_ALWAYS = {"color_jitter": (0.4, 0.4, 0.4, 0.1), "color_jitter_prob": 1.0, "gray_scale_prob": 1.0}


@pytest.mark.filterwarnings("ignore:Unused augmentation cfg items")  # open_clip warns yet uses them
@pytest.mark.parametrize("aug", [{}, {"scale": (0.3, 0.6)}, _JITTER_ALWAYS])
def test_train_matches_open_clip_with_same_seed(photos, aug):
    """Same torch seed, same output; probabilities of 1 keep open_clip's python-random draws out of the way."""
    reference = open_clip_transform.image_transform_v2(
        open_clip_transform.PreprocessCfg(size=224), is_train=True, aug_cfg=open_clip_transform.AugmentationCfg(**aug)
    )
    ours = _train(**aug)
    for seed in range(3):
        torch.manual_seed(seed)
        expected = reference(photos["coffee"])
        torch.manual_seed(seed)
        torch.testing.assert_close(ours(photos["coffee"]), expected, atol=1e-5, rtol=0)


def test_random_resized_crop_area_statistics():
    crop = RandomResizedCrop((224, 224), scale=(0.3, 0.6), ratio=(3 / 4, 4 / 3), interpolation="bicubic")
    torch.manual_seed(0)
    boxes = np.array([crop.sample_box(640, 427) for _ in range(2000)])  # (top, left, height, width)
    area = boxes[:, 2] * boxes[:, 3] / (640 * 427)
    aspect = boxes[:, 3] / boxes[:, 2]
    assert area.min() >= 0.3 * 0.99 and area.max() <= 0.6 * 1.01
    assert abs(area.mean() - 0.45) < 0.01  # uniform on [0.3, 0.6]
    assert aspect.min() >= 0.75 * 0.99 and aspect.max() <= 4 / 3 * 1.01
    assert np.all(boxes[:, 0] + boxes[:, 2] <= 427) and np.all(boxes[:, 1] + boxes[:, 3] <= 640)


@pytest.mark.parametrize(("scale", "ratio"), [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.9, 1.0), (3.0, 4.0))])
def test_crop_boxes_match_torchvision(scale, ratio):
    """Same draws as torchvision, including the central-crop fallback (ratio 3..4 never fits a 400 x 300)."""
    from torchvision.transforms import RandomResizedCrop as Reference

    crop = RandomResizedCrop((224, 224), scale=scale, ratio=ratio, interpolation="bicubic")
    image = Image.new("RGB", (400, 300))
    for seed in range(20):
        torch.manual_seed(seed)
        expected = Reference.get_params(image, list(scale), list(ratio))
        torch.manual_seed(seed)
        assert crop.sample_box(400, 300) == tuple(expected)


def test_unsupported_augmentation_is_an_error():
    with pytest.raises(ValueError, match="timm augmentation is not supported"):
        _train(use_timm=True)
    with pytest.raises(ValueError, match="timm augmentation is not supported"):
        _train(re_prob=0.25)
    with pytest.raises(ValueError, match="color_jitter_prob"):
        _train(color_jitter=0.4)
    with pytest.raises(ValueError, match="gray_scale_prob=1.5"):
        AugmentationConfig(gray_scale_prob=1.5)


# ------------------------------------------------------------------------------------------- loading


def test_load_image_decodes_real_file():
    image = load_image(GRACE_HOPPER)
    assert image.mode == "RGB" and image.size == (512, 600)


def test_load_image_names_a_truncated_or_non_image_file(tmp_path):
    data = open(GRACE_HOPPER, "rb").read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image\n")
    for path in (truncated, text):
        with pytest.raises(ValueError, match=f"cannot decode image {path}"):
            load_image(path)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


# -------------------------------------------------------------------------------------------- configs


def test_preprocess_config_from_dict_round_trip_and_errors():
    d = {"size": [256, 192], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize_mode": "longest"}
    cfg = PreprocessConfig.from_dict(d, source="ViT-X.json")
    assert cfg.size == (256, 192) and cfg.mean == (0.5, 0.5, 0.5) and cfg.image_size == (256, 192)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"'crop_pct'.*ViT-X\.json"):
        PreprocessConfig.from_dict({"size": 224, "crop_pct": 0.9}, source="ViT-X.json")
    with pytest.raises(ValueError, match=r"'lanczos'.*bicubic"):
        PreprocessConfig(interpolation="lanczos")
    with pytest.raises(ValueError, match="resize_mode='fit'"):
        PreprocessConfig(resize_mode="fit")
    with pytest.raises(ValueError, match="size=0"):
        PreprocessConfig(size=0)


def test_preprocess_config_merged_returns_new_config():
    base = PreprocessConfig()
    merged = base.merged(size=336, mean=None, interpolation="bilinear")
    assert merged.size == 336 and merged.interpolation == "bilinear" and merged.mean == base.mean
    assert base.size == 224 and base.interpolation == "bicubic"
    with pytest.raises(ValueError, match="'sise'"):
        base.merged(sise=336)


def test_augmentation_config_matches_open_clip_fields():
    ours = {f for f in AugmentationConfig.__dataclass_fields__}
    assert ours == set(open_clip_transform.AugmentationCfg.__dataclass_fields__)
    assert AugmentationConfig().scale == open_clip_transform.AugmentationCfg().scale
    assert AugmentationConfig.from_dict({"scale": [0.5, 1.0]}).scale == (0.5, 1.0)
    with pytest.raises(ValueError, match=r"'hflip'.*aug\.json"):
        AugmentationConfig.from_dict({"hflip": 0.5}, source="aug.json")


def test_constants_match_open_clip():
    from open_clip import constants

    from open_mclip import transform

    for name in ("OPENAI_DATASET", "IMAGENET", "INCEPTION"):
        for part in ("MEAN", "STD"):
            assert getattr(transform, f"{name}_{part}") == getattr(constants, f"{name}_{part}")


# --------------------------------------------------------------------------------------- no torchvision

_BLOCKED_SCRIPT = f"""
import sys
sys.modules["torchvision"] = None
sys.modules["timm"] = None
import numpy as np, skimage.data
from PIL import Image
from open_mclip.transform import PreprocessConfig, AugmentationConfig, image_transform, load_image
photo = load_image({str(GRACE_HOPPER)!r})
out = image_transform(PreprocessConfig(), is_train=False)(photo)
train = image_transform(PreprocessConfig(), is_train=True, aug_cfg=AugmentationConfig(color_jitter=0.4,
                        color_jitter_prob=0.8, gray_scale_prob=0.2))(photo)
assert out.shape == (3, 224, 224) and train.shape == (3, 224, 224)
assert sys.modules["torchvision"] is None
print("ok", float(out.mean()))
"""


def test_imports_and_runs_with_torchvision_blocked(photos):
    result = subprocess.run([sys.executable, "-c", _BLOCKED_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    mean = float(result.stdout.split()[-1])
    expected = _reference(224, "shortest", "bicubic")(photos["grace_hopper.jpg"]).mean().item()
    assert mean == pytest.approx(expected, abs=1e-6)
