"""Preprocessing: parity with open_clip's transforms on real photos, mode conversion, train crops, loading."""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
import random
import re
import subprocess
import sys

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from open_mclip import transform as transform_module
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


# ------------------------------------------------------------------------- open_clip's public names


def _parameters(function) -> list[tuple[str, object, object]]:
    """(name, kind, default) per parameter, enum defaults by value (torchvision's InterpolationMode.BICUBIC)."""
    signature = inspect.signature(function)
    return [(p.name, p.kind, getattr(p.default, "value", p.default)) for p in signature.parameters.values()]


@pytest.mark.parametrize(
    "name", ["image_transform", "image_transform_v2", "merge_preprocess_dict", "merge_preprocess_kwargs"]
)
def test_open_clip_functions_have_open_clip_signatures(name):
    assert _parameters(getattr(transform_module, name)) == _parameters(getattr(open_clip_transform, name))


@pytest.mark.parametrize("name", ["ResizeKeepRatio", "CenterCropOrPad"])
def test_open_clip_classes_have_open_clip_signatures(name):
    ours, theirs = getattr(transform_module, name), getattr(open_clip_transform, name)
    assert _parameters(ours.__init__) == _parameters(theirs.__init__)
    if name == "ResizeKeepRatio":
        assert _parameters(ours.get_params) == _parameters(theirs.get_params)


def test_all_names_exist_and_include_open_clip_names():
    assert all(hasattr(transform_module, name) for name in transform_module.__all__)
    open_clip_names = {"image_transform", "image_transform_v2", "PreprocessCfg", "AugmentationCfg", "ResizeKeepRatio"}
    open_clip_names |= {"merge_preprocess_dict", "merge_preprocess_kwargs", "CenterCropOrPad", "OPENAI_DATASET_MEAN"}
    assert open_clip_names <= set(transform_module.__all__)
    assert transform_module.PreprocessCfg is PreprocessConfig
    assert transform_module.AugmentationCfg is AugmentationConfig


_OPEN_CLIP_ARGUMENTS = [
    (224, False),
    ((256, 192), False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "longest", "bilinear", 128),
    ((192, 256), False, 0.5, 0.25, "shortest", "bilinear"),
    (200, False, None, None, "squash", "random"),
    (160, False, None, None, None, None, 0, {"scale": (0.3, 0.6)}),  # an eval transform ignores aug_cfg
]


@pytest.mark.parametrize("arguments", _OPEN_CLIP_ARGUMENTS)
def test_image_transform_takes_open_clip_arguments(photos, arguments):
    ours, reference = image_transform(*arguments), open_clip_transform.image_transform(*arguments)
    for name in ("chelsea", "rocket", "horse"):
        torch.testing.assert_close(ours(photos[name]), reference(photos[name]), atol=1e-5, rtol=0, msg=name)


@pytest.mark.filterwarnings("ignore:Unused augmentation cfg items")
def test_image_transform_train_takes_an_aug_cfg_dict(photos):
    aug = {"scale": (0.4, 0.8), "color_jitter": (0.3, 0.3, 0.3, 0.05), "color_jitter_prob": 1.0}
    ours = image_transform(224, True, aug_cfg=aug)
    reference = open_clip_transform.image_transform(224, True, aug_cfg=aug)
    for seed in range(3):
        torch.manual_seed(seed)
        expected = reference(photos["china.jpg"])
        torch.manual_seed(seed)
        torch.testing.assert_close(ours(photos["china.jpg"]), expected, atol=1e-5, rtol=0)


def test_image_transform_takes_a_config_first_and_refuses_mixing(photos):
    cfg = PreprocessConfig(size=(256, 192), resize_mode="longest", fill_color=30)
    image = photos["coffee"]
    assert torch.equal(image_transform(cfg, is_train=False)(image), image_transform(cfg, False)(image))
    reference = open_clip_transform.image_transform_v2(
        open_clip_transform.PreprocessCfg(size=(256, 192), resize_mode="longest", fill_color=30), is_train=False
    )
    torch.testing.assert_close(image_transform(cfg, False)(image), reference(image), atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match=r"mean given with a PreprocessConfig.*merged\(mean="):
        image_transform(cfg, False, mean=(0.5, 0.5, 0.5))
    with pytest.raises(TypeError, match="fill_color"):
        image_transform(cfg, False, fill_color=9)
    with pytest.raises(ValueError, match=r"'hflip'.*aug_cfg"):
        image_transform(cfg, True, aug_cfg={"hflip": 0.5})
    with pytest.raises(TypeError, match="aug_cfg must be.*list"):
        image_transform(cfg, True, aug_cfg=[0.9, 1.0])


def test_image_transform_v2_takes_our_config_and_open_clips(photos):
    settings = {"size": (192, 256), "resize_mode": "longest", "interpolation": "bilinear", "fill_color": 77}
    reference = open_clip_transform.image_transform_v2(open_clip_transform.PreprocessCfg(**settings), False)
    ours = transform_module.image_transform_v2(transform_module.PreprocessCfg(**settings), False)
    foreign = transform_module.image_transform_v2(open_clip_transform.PreprocessCfg(**settings), False)
    for name in ("astronaut", "flower.jpg"):
        expected = reference(photos[name])
        torch.testing.assert_close(ours(photos[name]), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(foreign(photos[name]), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [224, (256, 192)])
def test_preprocess_cfg_offers_open_clips_fields_and_properties(size):
    ours, theirs = transform_module.PreprocessCfg(size=size), open_clip_transform.PreprocessCfg(size=size)
    assert ours.num_channels == theirs.num_channels == 3
    assert ours.input_size == tuple(theirs.input_size)
    theirs_fields = dataclasses.asdict(theirs)
    assert {k: v for k, v in ours.to_dict().items() if k in theirs_fields} == theirs_fields


def test_merge_preprocess_matches_open_clip():
    ours_base, theirs_base = transform_module.PreprocessCfg(size=336), open_clip_transform.PreprocessCfg(size=336)
    overlay = {"mean": (0.5, 0.5, 0.5), "std": None, "resize_mode": "squash", "crop_pct": 0.9}
    merged = transform_module.merge_preprocess_dict(ours_base, overlay)
    expected = open_clip_transform.merge_preprocess_dict(theirs_base, overlay)
    assert type(merged) is type(expected) is dict
    assert {k: merged[k] for k in expected} == expected
    assert set(merged) - set(expected) == {"rgb_conversion", "background_color"}  # our two options
    hub = {"size": 384, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "model_name": "x"}
    assert transform_module.merge_preprocess_dict(hub, overlay) == open_clip_transform.merge_preprocess_dict(
        hub, overlay
    )
    kwargs = transform_module.merge_preprocess_kwargs(hub, interpolation="bilinear", fill_color=None)
    assert kwargs == open_clip_transform.merge_preprocess_kwargs(hub, interpolation="bilinear", fill_color=None)
    assert PreprocessConfig.from_dict(merged).resize_mode == "squash"  # the result builds a config again


@pytest.mark.parametrize("longest", [0.0, 0.5, 1.0])
def test_resize_keep_ratio_matches_open_clip(photos, longest):
    from torchvision.transforms import InterpolationMode

    for size in (224, (256, 192), [100, 300]):
        ours = transform_module.ResizeKeepRatio(size, longest, InterpolationMode.BILINEAR)
        theirs = open_clip_transform.ResizeKeepRatio(size, longest, InterpolationMode.BILINEAR)
        for name in ("astronaut", "rocket"):
            assert np.array_equal(np.asarray(ours(photos[name])), np.asarray(theirs(photos[name]))), (size, name)
    jitter = {"random_scale_prob": 1.0, "random_aspect_prob": 1.0}
    ours = transform_module.ResizeKeepRatio(224, longest, **jitter)
    theirs = open_clip_transform.ResizeKeepRatio(224, longest, **jitter)
    sizes = []
    for seed in range(4):  # the jitter draws from python's random, as open_clip's
        random.seed(seed)
        got = ours(photos["coffee"])
        random.seed(seed)
        assert np.array_equal(np.asarray(got), np.asarray(theirs(photos["coffee"])))
        sizes.append(got.size)
    assert len(set(sizes)) == 4


def test_center_crop_or_pad_matches_open_clip_in_own_mode(photos):
    image = photos["chelsea"]
    for mode_image in (image, image.quantize(colors=64), image.convert("CMYK"), image.convert("LA")):
        for size, fill in ((64, 0), ((500, 400), 90), (300, 255), ([700], 10)):
            ours = transform_module.CenterCropOrPad(size, fill)(mode_image)
            theirs = open_clip_transform.CenterCropOrPad(size, fill)(mode_image)
            assert ours.mode == theirs.mode and ours.size == theirs.size
            assert np.array_equal(np.asarray(ours.convert("RGB")), np.asarray(theirs.convert("RGB")))
    with pytest.raises(TypeError, match="Tensor"):
        transform_module.CenterCropOrPad(64)(torch.zeros(3, 8, 8))


# ---------------------------------------------------------------------------------- the new options


def test_preprocess_config_conversion_options_validate_and_round_trip():
    cfg = PreprocessConfig.from_dict({"rgb_conversion": "before_resize", "background_color": [0, 64, 255]})
    assert cfg.background_color == (0, 64, 255)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert PreprocessConfig().rgb_conversion == "after_resize" and PreprocessConfig().background_color == (255,) * 3
    with pytest.raises(ValueError, match=r"rgb_conversion='composite'.*'after_resize', 'before_resize'"):
        PreprocessConfig(rgb_conversion="composite")
    for bad in ((256, 0, 0), (0, 0), "white", (0.5, 0, 0)):
        with pytest.raises(ValueError, match=re.escape(f"background_color={bad!r} is invalid")):
            PreprocessConfig(background_color=bad)
    assert PreprocessConfig().merged(rgb_conversion="before_resize").rgb_conversion == "before_resize"


def test_open_clip_hub_preprocess_cfg_parses():
    hub = {"size": 384, "mode": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}
    hub |= {"resize_mode": "squash", "fill_color": 0}
    cfg = PreprocessConfig.from_dict(hub, source="open_clip_config.json")
    assert cfg.size == 384 and cfg.resize_mode == "squash" and cfg.rgb_conversion == "after_resize"
    assert PreprocessConfig().merged(**hub) == cfg


def test_random_interpolation_is_bicubic_as_in_open_clip(photos):
    random_cfg = PreprocessConfig(size=200, interpolation="random")
    image = photos["flower.jpg"]
    expected = image_transform(PreprocessConfig(size=200), is_train=False)(image)
    assert torch.equal(image_transform(random_cfg, is_train=False)(image), expected)
