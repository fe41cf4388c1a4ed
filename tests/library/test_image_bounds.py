"""Inputs are bounded before any resize: a tiny file whose header claims an extreme shape or a huge pixel count is
refused by load_image (before decoding) and by every transform's first step, with the limit named; real photos
within the bounds come out exactly as without them."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from open_mclip.image_ops import ImageBounds, ImageTooLargeError, image_bounds_of, load_image, with_image_bounds
from open_mclip.transform import PreprocessConfig, image_transform


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` RGB pixels whose pixel data is 4 bytes of garbage: a reader that decoded
    before checking the size would fail on the data, not on the size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"\x00\x01\x02\x03")


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def strip(tmp_path) -> Path:
    """A real 1 x 4000 PNG of about a hundred bytes: the eval resize would scale it to 224 x 896000 (800 MB)."""
    path = tmp_path / "strip.png"
    path.write_bytes(png(1, 4000))
    assert path.stat().st_size < 500
    return path


def test_load_image_refuses_from_the_header_before_decoding(tmp_path):
    path = tmp_path / "claims.png"
    path.write_bytes(png_header_only(1, 4000))
    with pytest.raises(ValueError, match="cannot decode"):
        load_image(path, bounds=None)  # decoding fails: there are no pixels
    with pytest.raises(ImageTooLargeError, match=r"claims\.png is 1x4000.*max_aspect_ratio=100") as err:
        load_image(path)  # the default bound answers first, from the header
    assert err.value.limit == "max_aspect_ratio"
    path.write_bytes(png_header_only(3000, 3000))
    with pytest.raises(ImageTooLargeError, match="9000000 pixels, over max_pixels=1000000") as err:
        load_image(path, bounds=ImageBounds(max_pixels=1_000_000))
    assert err.value.limit == "max_pixels"


def test_pillows_own_bomb_limit_is_reported_as_too_many_pixels(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20000, 20000))  # 400 M pixels in 49 bytes
    assert path.stat().st_size < 100
    with pytest.raises(ImageTooLargeError, match="bomb.png") as err:
        load_image(path, bounds=None)  # unbounded here, but Pillow refuses beyond twice Image.MAX_IMAGE_PIXELS
    assert err.value.limit == "max_pixels"


@pytest.mark.parametrize("is_train", [False, True], ids=["eval", "train"])
def test_every_transform_checks_before_its_first_resize(strip, is_train):
    transform = image_transform(PreprocessConfig(size=224), is_train=is_train)
    with Image.open(strip) as image:  # lazily opened: the check needs the size alone
        with pytest.raises(ImageTooLargeError, match="1x4000"):
            transform(image)
    tall_enough = Image.open(io.BytesIO(png(40, 4000)))  # a ratio of exactly 100 is allowed
    assert tuple(transform(tall_enough).shape) == (3, 224, 224)


def test_bounds_are_set_per_transform(strip):
    default = image_transform(PreprocessConfig(size=32), is_train=False)
    unbounded = with_image_bounds(default, None)
    strict = with_image_bounds(default, ImageBounds(max_pixels=100, max_aspect_ratio=2.0))
    assert image_bounds_of(default) == ImageBounds() and image_bounds_of(unbounded) is None
    assert image_bounds_of(strict) == ImageBounds(100, 2.0)
    image = load_image(strip, bounds=None)
    assert tuple(unbounded(image).shape) == (3, 32, 32)  # at 32 px the strip costs 4 MB: allowed when asked
    with pytest.raises(ImageTooLargeError):
        default(image)  # the original keeps its bounds
    with pytest.raises(ImageTooLargeError, match="max_pixels=100"):
        strict(Image.new("RGB", (11, 10)))
    assert image_bounds_of(pickle.loads(pickle.dumps(strict))) == ImageBounds(100, 2.0)  # travels to loader workers
    with pytest.raises(TypeError, match="no PrepareMode step"):
        with_image_bounds(lambda image: image, ImageBounds())


def test_photos_within_the_bounds_are_unchanged(photos):
    for is_train in (False, True):
        bounded = image_transform(PreprocessConfig(size=64), is_train=is_train)
        unbounded = with_image_bounds(bounded, None)
        for photo in photos:
            torch.manual_seed(0)
            expected = unbounded(photo)
            torch.manual_seed(0)
            assert torch.equal(bounded(photo), expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_pixels": 0}, "max_pixels=0"),
        ({"max_pixels": 1.5}, "max_pixels=1.5"),
        ({"max_aspect_ratio": 0.5}, "max_aspect_ratio=0.5"),
        ({"max_aspect_ratio": float("inf")}, "max_aspect_ratio=inf"),
    ],
)
def test_bad_bounds_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageBounds(**kwargs)
