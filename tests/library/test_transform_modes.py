"""Preprocessing in every image mode: open_clip's tensors by default (resize in the image's own mode, convert to RGB
after), the ``rgb_conversion="before_resize"`` option where it should differ, and 16-bit greyscale rescaled."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from open_mclip.transform import AugmentationConfig, PreprocessConfig, image_transform

open_clip_transform = pytest.importorskip("open_clip.transform")

# Pillow's advice when convert("RGB") drops a palette's alpha table: open_clip's result, so expected here
pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency expressed in bytes")

_SIZES = (48, (40, 64), 120)  # downscale, non-square target, upscale of the ~96 x 72 test images


def _png(image: Image.Image) -> Image.Image:
    """``image`` saved as PNG and decoded again, as a file from disk would come."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    return decoded


def _soft_disk(width: int, height: int) -> np.ndarray:
    """An alpha mask: opaque centre disk, a soft edge, fully transparent corners."""
    yy, xx = np.mgrid[:height, :width]
    radius = np.hypot(yy - height / 2, xx - width / 2)
    return np.clip((0.4 * min(width, height) - radius) * 40, 0, 255).astype(np.uint8)


def _transparent_png(photo: Image.Image) -> Image.Image:
    """An RGBA PNG like open_clip's README image: transparent pixels hide colours that are not white."""
    rgb = np.asarray(photo)
    alpha = _soft_disk(photo.width, photo.height)
    image = _png(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
    hidden = np.asarray(image)[..., :3][np.asarray(image)[..., 3] == 0]
    assert len(hidden) > 0.2 * alpha.size and hidden.mean() < 200  # a photo under the transparency, kept by PNG
    return image


def _palette_png_with_alpha_table(photo: Image.Image) -> Image.Image:
    """A palette PNG whose tRNS chunk gives each of its 16 colours a different alpha."""
    palette = photo.quantize(colors=16)
    colours = palette.getpalette()[: 16 * 3]
    rgba = [value for i in range(16) for value in (*colours[3 * i : 3 * i + 3], 17 * i)]
    palette.putpalette(rgba, "RGBA")
    image = _png(palette)
    assert image.mode == "P" and isinstance(image.info["transparency"], bytes)
    return image


def _palette_png_with_transparent_index(photo: Image.Image) -> Image.Image:
    palette = photo.quantize(colors=32)
    palette.info["transparency"] = palette.getpixel((0, 0))
    image = _png(palette)
    assert image.mode == "P" and isinstance(image.info["transparency"], int)
    return image


def _modes(photo: Image.Image) -> dict[str, Image.Image]:
    rgba = _transparent_png(photo)
    return {
        "RGB": photo,
        "L": photo.convert("L"),
        "RGBA": rgba,
        "LA": _png(rgba.convert("LA")),
        "P": _png(photo.quantize(colors=32)),
        "P-transparent-index": _palette_png_with_transparent_index(photo),
        "P-alpha-table": _palette_png_with_alpha_table(photo),
        "PA": rgba.convert("PA"),
        "1": photo.convert("1"),
        "CMYK": photo.convert("CMYK"),
        "YCbCr": photo.convert("YCbCr"),
    }


MODE_NAMES = ["RGB", "L", "RGBA", "LA", "P", "P-transparent-index", "P-alpha-table", "PA", "1", "CMYK", "YCbCr"]


@pytest.fixture(scope="module")
def small_photos(photos) -> list[Image.Image]:
    """Three of the real photos at about 96 x 72, so every mode and setting runs in seconds."""
    return [photo.resize((96, round(96 * photo.height / photo.width)), Image.Resampling.BOX) for photo in photos[:3]]


@pytest.fixture(scope="module")
def mode_images(small_photos) -> dict[str, list[Image.Image]]:
    per_photo = [_modes(photo) for photo in small_photos]
    assert list(per_photo[0]) == MODE_NAMES
    return {name: [images[name] for images in per_photo] for name in MODE_NAMES}


def _open_clip_input(image: Image.Image) -> Image.Image:
    """What we match open_clip on: the image itself, except PA as RGBA (see test_pa_is_resized_as_rgba)."""
    return image.convert("RGBA") if image.mode == "PA" else image


def _pair(size, resize_mode, interpolation, fill=0, **options):
    settings = {"size": size, "resize_mode": resize_mode, "interpolation": interpolation, "fill_color": fill}
    reference = open_clip_transform.image_transform_v2(open_clip_transform.PreprocessCfg(**settings), is_train=False)
    return reference, image_transform(PreprocessConfig(**settings, **options), is_train=False)


# ------------------------------------------------------------------------------ default = open_clip's


@pytest.mark.parametrize("mode", MODE_NAMES)
@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_eval_matches_open_clip_in_every_mode(mode_images, mode, resize_mode):
    for size in _SIZES:
        for interpolation in ("bicubic", "bilinear"):
            for fill in (0, 150) if resize_mode == "longest" else (0,):
                reference, ours = _pair(size, resize_mode, interpolation, fill)
                for image in mode_images[mode]:
                    assert image.mode == mode.split("-")[0]
                    torch.testing.assert_close(ours(image), reference(_open_clip_input(image)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_eval_matches_open_clip_when_padding_tiny_images(mode_images, mode):
    """Images smaller than the crop are padded in their own mode (a palette index for P, CMYK 0 is white)."""
    for image in mode_images[mode]:
        tiny = image.crop((10, 10, 17, 15))  # 7 x 5
        for resize_mode, fill in (("longest", 0), ("longest", 150), ("shortest", 0)):
            reference, ours = _pair((40, 64), resize_mode, "bicubic", fill)
            torch.testing.assert_close(ours(tiny), reference(_open_clip_input(tiny)), atol=1e-5, rtol=0)


_AUGMENTATIONS = [{}, {"scale": (0.3, 0.6)}, {"color_jitter": (0.4, 0.4, 0.4, 0.1), "color_jitter_prob": 1.0}]


@pytest.mark.filterwarnings("ignore:Unused augmentation cfg items")  # open_clip warns yet uses them
@pytest.mark.parametrize("mode", MODE_NAMES)
@pytest.mark.parametrize("aug", _AUGMENTATIONS + [{"gray_scale_prob": 1.0}])
def test_train_matches_open_clip_in_every_mode(mode_images, mode, aug):
    """Same torch seed, same crop and colour draws; probabilities of 1 keep open_clip's python-random out."""
    reference = open_clip_transform.image_transform_v2(
        open_clip_transform.PreprocessCfg(size=40), is_train=True, aug_cfg=open_clip_transform.AugmentationCfg(**aug)
    )
    ours = image_transform(PreprocessConfig(size=40), is_train=True, aug_cfg=AugmentationConfig(**aug))
    for seed, image in enumerate(mode_images[mode]):
        torch.manual_seed(seed)
        expected = reference(_open_clip_input(image))
        torch.manual_seed(seed)
        torch.testing.assert_close(ours(image), expected, atol=1e-5, rtol=0)


def test_transparent_png_default_is_open_clip_not_white(small_photos):
    """The README case: open_clip drops alpha after resizing, so transparent areas are not white (black where
    Pillow's premultiplied resize zeroed them); the default follows it, white compositing would be far off."""
    rgba = _transparent_png(small_photos[0])
    reference, ours = _pair(48, "shortest", "bicubic")
    expected = reference(rgba)
    torch.testing.assert_close(ours(rgba), expected, atol=1e-5, rtol=0)
    white = reference(rgba.convert("RGB").point(lambda _: 255))
    corner = (slice(None), slice(0, 3), slice(0, 3))  # fully transparent
    assert (expected[corner] - white[corner]).abs().min() > 3.0


def test_pa_is_resized_as_rgba(small_photos):
    """open_clip's PA result is broken (Pillow interpolates palette indices as grey levels); ours is its RGBA one."""
    pa = small_photos[0].convert("PA")  # opaque: the same picture as pa.convert("RGB")
    reference, ours = _pair(120, "shortest", "bicubic")
    expected = reference(pa.convert("RGB"))
    torch.testing.assert_close(ours(pa), expected, atol=1e-5, rtol=0)
    assert (reference(pa) - expected).abs().mean() > 0.5


# ------------------------------------------------------------------------------- the before_resize option


def _composited_over(rgba: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Reference compositing in float: colour * alpha + background * (1 - alpha), rounded."""
    values = np.asarray(rgba, dtype=np.float64)
    alpha = values[..., 3:] / 255
    out = values[..., :3] * alpha + np.asarray(background, dtype=np.float64) * (1 - alpha)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 0), (20, 120, 220)])
def test_before_resize_composites_transparency_over_background(small_photos, background):
    rgba = _transparent_png(small_photos[1])
    reference, default = _pair(48, "shortest", "bicubic")
    option = image_transform(
        PreprocessConfig(size=48, rgb_conversion="before_resize", background_color=background), is_train=False
    )
    expected = reference(_composited_over(rgba, background))  # open_clip's geometry on our flattened image
    got = option(rgba)
    std = torch.tensor(PreprocessConfig().std).view(3, 1, 1)
    assert ((got - expected).abs() * std).max() <= 1.01 / 255  # Pillow's compositing rounds within one level
    assert (got - default(rgba)).abs().max() > 1.0


def test_before_resize_resamples_palette_and_binary_images_in_rgb(mode_images):
    """Pillow resizes P and 1 images nearest-neighbour (open_clip's result); the option converts first."""
    option = image_transform(PreprocessConfig(size=48, rgb_conversion="before_resize"), is_train=False)
    reference, default = _pair(48, "shortest", "bicubic")
    for mode in ("P", "1"):
        for image in mode_images[mode]:
            torch.testing.assert_close(option(image), reference(image.convert("RGB")), atol=1e-5, rtol=0)
            assert (option(image) - default(image)).abs().max() > 0.1, mode


def test_before_resize_changes_nothing_for_opaque_rgb_and_grey(mode_images):
    option = image_transform(PreprocessConfig(size=(40, 64), rgb_conversion="before_resize"), is_train=False)
    default = image_transform(PreprocessConfig(size=(40, 64)), is_train=False)
    for mode in ("RGB", "L"):
        for image in mode_images[mode]:
            assert torch.equal(option(image), default(image)), mode


# ------------------------------------------------------------------------------------ high bit depths


def _grey(photo: Image.Image) -> np.ndarray:
    return np.asarray(photo.convert("L"))


@pytest.mark.parametrize("rgb_conversion", ["after_resize", "before_resize"])
def test_high_depth_greyscale_is_rescaled_before_resizing(small_photos, rgb_conversion):
    """I;16*, I and F come out as the 8-bit image we compute here, in both options; open_clip clips to white."""
    grey = _grey(small_photos[2])
    wide = grey.astype(np.uint16) * 256 + 100  # a photo in 16 bits, low byte not zero
    cases = {
        "I;16": (Image.fromarray(wide), wide / 65535),
        "I;16B": (Image.frombytes("I;16B", wide.shape[::-1], wide.astype(">u2").tobytes()), wide / 65535),
        "I": (Image.fromarray(wide.astype(np.int32)), wide / 65535),
        "F": (Image.fromarray(grey.astype(np.float32) / 255), grey / 255),
    }
    for size, resize_mode in ((48, "shortest"), ((40, 64), "longest")):
        reference, _ = _pair(size, resize_mode, "bicubic")
        ours = image_transform(
            PreprocessConfig(size=size, resize_mode=resize_mode, rgb_conversion=rgb_conversion), is_train=False
        )
        for mode, (image, unit) in cases.items():
            assert image.mode == mode
            eight_bit = Image.fromarray(np.rint(unit * 255).astype(np.uint8), "L")
            torch.testing.assert_close(ours(image), reference(eight_bit), atol=1e-5, rtol=0, msg=mode)
    reference, _ = _pair(48, "shortest", "bicubic")
    clipped, white = reference(cases["I;16"][0]), reference(Image.new("L", grey.shape[::-1], 255))
    assert (clipped == white).float().mean() > 0.9 and grey.mean() < 200  # open_clip's own result: nearly all white
