"""Image basics for preprocessing, with Pillow and torch only: reading a file, the mode steps before and after
resizing, the resize, crop and pad steps (in the image's own mode), and the PIL -> tensor conversion.

By default an image is resized in its own mode and converted to RGB afterwards, as open_clip does (Pillow resizes
RGBA and LA premultiplied and P and 1 images nearest-neighbour; ``convert("RGB")`` then drops alpha). Only the modes
open_clip mangles change first: 16-bit and float greyscale (which ``convert`` clips to white) are rescaled to 8
bits, PA (whose palette indices Pillow would interpolate) becomes RGBA. ``to_rgb`` is the alternative conversion
before resizing: transparency composited over a background, every mode resampled in RGB.

Inputs are bounded before any resize (``ImageBounds``): a tiny file can hold a 1 x 20000 image whose short side the
eval resize scales to 224, about 4 GB of pixels. ``load_image`` checks the size in the file header before decoding,
``PrepareMode`` (every transform's first step) before any geometric step.
"""

from __future__ import annotations

import copy
import numbers
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
WHITE = (255, 255, 255)
RGB_CONVERSIONS = ("after_resize", "before_resize")


class ImageTooLargeError(ValueError):
    """An image beyond an ``ImageBounds`` limit; ``limit`` says which: "max_pixels" or "max_aspect_ratio"."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class ImageBounds:
    """The largest input accepted: ``max_pixels`` (width x height; Pillow's own warning threshold by default) and
    ``max_aspect_ratio`` (long side / short side), which bounds what a resize of the short side costs."""

    max_pixels: int = 89_478_485
    max_aspect_ratio: float = 100.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_pixels, int) or isinstance(self.max_pixels, bool) or self.max_pixels < 1:
            raise ValueError(f"max_pixels={self.max_pixels!r} is invalid; use an int >= 1")
        ratio = self.max_aspect_ratio
        if not isinstance(ratio, numbers.Real) or isinstance(ratio, bool) or not 1.0 <= ratio < float("inf"):
            raise ValueError(f"max_aspect_ratio={ratio!r} is invalid; use a finite number >= 1")

    def check(self, size: tuple[int, int], *, name: str = "image") -> None:
        """Raise ``ImageTooLargeError`` naming ``name`` if a (width, height) ``size`` is beyond a bound."""
        width, height = size
        if width * height > self.max_pixels:
            raise ImageTooLargeError(
                f"{name} is {width}x{height} = {width * height} pixels, over max_pixels={self.max_pixels}; "
                "skip it, shrink it, or raise the bound",
                limit="max_pixels",
            )
        if max(width, height) > self.max_aspect_ratio * max(min(width, height), 1):
            raise ImageTooLargeError(
                f"{name} is {width}x{height}, an aspect ratio over max_aspect_ratio={self.max_aspect_ratio:g}; "
                "resizing its short side would cost memory out of all proportion: skip it, crop it, or raise the bound",
                limit="max_aspect_ratio",
            )


DEFAULT_BOUNDS = ImageBounds()


def draft_jpeg(image: Image.Image, size: tuple[int, int] | None) -> None:
    """Before decoding: have Pillow decode a JPEG at the smallest 1/2, 1/4 or 1/8 scale whose width and height both
    stay at least ``size`` (width, height), by its DCT scaling. Fewer pixels are decoded (4-64x for a large photo),
    and they differ from a full decode followed by a resize; other formats, and ``size`` None, are left alone."""
    if size is not None and image.format == "JPEG":
        image.draft(image.mode, size)


def load_image(
    path: str | os.PathLike,
    *,
    bounds: ImageBounds | None = DEFAULT_BOUNDS,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Open and fully decode an image file, so that a broken file fails here and names itself.

    An image beyond ``bounds`` (None: no bound) raises ``ImageTooLargeError`` from its header, before decoding.
    ``draft`` (width, height): decode a JPEG at a reduced scale that keeps both sides at least that (``draft_jpeg``).
    """
    try:
        with Image.open(path) as image:
            if bounds is not None:
                bounds.check(image.size, name=f"image {os.fspath(path)}")
            draft_jpeg(image, draft)
            image.load()
    except (FileNotFoundError, IsADirectoryError, PermissionError, ImageTooLargeError):
        raise  # a missing or unreadable path, or a size refused, is not a decoding problem
    except Image.DecompressionBombError as err:  # Pillow's own limit, at twice Image.MAX_IMAGE_PIXELS
        raise ImageTooLargeError(f"image {os.fspath(path)}: {err}", limit="max_pixels") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot decode image {os.fspath(path)}: {err}") from err
    return image


def _scale_to_uint8(values: np.ndarray, *, full_scale: float | None) -> np.ndarray:
    """Map values to 0..255; ``full_scale`` is the value meaning white, or None to stretch min..max."""
    values = values.astype(np.float64)
    if full_scale is None:
        low, high = float(values.min()), float(values.max())
        values = (values - low) * (255.0 / (high - low) if high > low else 0.0)
    else:
        values = values * (255.0 / full_scale)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def is_high_depth(mode: str) -> bool:
    """True for 16/32-bit integer and float greyscale, which ``convert`` clips at 255."""
    return mode in ("I", "F") or mode.startswith("I;16")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Rescale 16/32-bit integer or float greyscale to 8 bits instead of clipping like ``convert`` does.

    ``I;16*`` is always read as 0..65535. ``I`` and ``F`` use the smallest usual range that holds the data:
    0..1 (``F`` only), 0..255, 0..65535 (``I`` only), else the image's own min..max. A ``transparency``
    entry on such an image is ignored.
    """
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        return Image.fromarray(_scale_to_uint8(values, full_scale=65535.0), "L")
    low, high = float(values.min()), float(values.max())
    ranges = (1.0, 255.0) if image.mode == "F" else (255.0, 65535.0)
    full_scale = next((r for r in ranges if low >= 0.0 and high <= r), None)
    return Image.fromarray(_scale_to_uint8(values, full_scale=full_scale), "L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def _composite(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Flatten an image with transparency onto an opaque ``background`` colour."""
    if image.mode == "La":  # premultiplied grey: colour already carries the alpha factor
        grey, alpha = np.moveaxis(np.asarray(image, dtype=np.float64), -1, 0)
        rgb = grey[..., None] + np.asarray(background, dtype=np.float64) * (1.0 - alpha[..., None] / 255.0)
        return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def to_rgb(image: Image.Image, *, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is flattened onto ``background`` (white by default).

    The conversion of ``PreprocessConfig(rgb_conversion="before_resize")``. open_clip instead resizes first and
    then calls ``convert("RGB")``, which drops alpha (colour hidden under transparent pixels shows) and clips
    16-bit greyscale at 255. Opaque 8-bit images convert exactly as ``convert("RGB")`` does.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}; convert with PIL.Image.fromarray")
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if is_high_depth(image.mode):
        return _high_depth_to_l(image).convert("RGB")
    if _has_alpha(image):
        return _composite(image, background)
    return image.convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit image as a float32 (channels, height, width) tensor in [0, 1], as torchvision's ToTensor."""
    assert image.mode in ("RGB", "L"), image.mode
    array = np.array(image, dtype=np.uint8, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


# modes open_clip cannot resize or convert sanely, and the mode that carries the same image through its pipeline:
# Pillow resamples a PA image's palette indices as if they were grey levels, and cannot convert La to RGB
_SOURCE_MODES = {"PA": "RGBA", "La": "LA"}


class PrepareMode:
    """Step before any resizing: the size check and the mode changes that must happen in the source image.

    An image beyond ``bounds`` raises ``ImageTooLargeError`` (a lazily opened one before its pixels are decoded).
    16-bit and float greyscale are rescaled to 8-bit L, PA becomes RGBA and La becomes LA (see ``_SOURCE_MODES``);
    every other mode is left to resize as it is, as open_clip does. With ``rgb_first`` every image is converted
    here instead (``to_rgb``: transparency flattened onto ``background``).
    """

    def __init__(
        self,
        *,
        rgb_first: bool = False,
        background: tuple[int, int, int] = WHITE,
        bounds: ImageBounds | None = DEFAULT_BOUNDS,
    ) -> None:
        self.rgb_first = rgb_first
        self.background = background
        self.bounds = bounds

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.bounds is not None:
            self.bounds.check(image.size)
        if self.rgb_first:
            return to_rgb(image, background=self.background)
        if is_high_depth(image.mode):
            return _high_depth_to_l(image)
        if image.mode in _SOURCE_MODES:
            return image.convert(_SOURCE_MODES[image.mode])
        return image

    def __repr__(self) -> str:
        return f"PrepareMode(rgb_first={self.rgb_first}, background={self.background}, bounds={self.bounds})"


def with_image_bounds(transform: Any, bounds: ImageBounds | None) -> Any:
    """A copy of ``transform`` whose size checks (its ``PrepareMode`` steps) use ``bounds`` (None: unbounded).

    For transforms built by ``image_transform``; anything without such steps is an error, since the bound would
    silently not apply."""
    steps = getattr(transform, "steps", None)
    if not isinstance(steps, list) or not any(isinstance(step, PrepareMode) for step in steps):
        raise TypeError(f"{type(transform).__name__} has no PrepareMode step to bound; build it with image_transform")
    bounded = copy.copy(transform)
    bounded.steps = [copy.copy(step) if isinstance(step, PrepareMode) else step for step in steps]
    for step in bounded.steps:
        if isinstance(step, PrepareMode):
            step.bounds = bounds
    return bounded


def image_bounds_of(transform: Any) -> ImageBounds | None:
    """The bounds a transform's first size check applies (None: unbounded or no such step)."""
    return next((s.bounds for s in getattr(transform, "steps", []) if isinstance(s, PrepareMode)), None)


class ConvertToRGB:
    """Step after the geometric steps: ``convert("RGB")``, as open_clip's ``MaybeConvertMode`` (alpha dropped)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ConvertToRGB()"


def resize_image(image: Image.Image, width_height: tuple[int, int], interpolation: str) -> Image.Image:
    """Resize in the image's own mode (Pillow premultiplies RGBA/LA and uses nearest for P and 1)."""
    if image.size == width_height:
        return image
    return image.resize(width_height, INTERPOLATIONS[interpolation])


def _fill_for(image: Image.Image, fill: int | float | Sequence[int | float]) -> int | float | tuple:
    """A pad colour for ``image``'s mode as torchvision gives it: one value per band (a palette index for P)."""
    bands = len(image.getbands())
    values = (fill,) * bands if isinstance(fill, numbers.Real) else tuple(fill)
    if len(values) == 1:
        values = values * bands
    if len(values) != bands:
        raise ValueError(f"fill={fill!r} has {len(values)} values; image mode {image.mode} has {bands} bands")
    if image.mode != "F":
        values = tuple(int(v) for v in values)
    return values[0] if bands == 1 else values


def pad_image(image: Image.Image, ltrb: tuple[int, int, int, int], fill: int | Sequence[int]) -> Image.Image:
    """Pad by (left, top, right, bottom) pixels with ``fill`` in the image's own mode, as torchvision's pad."""
    return ImageOps.expand(image, border=ltrb, fill=_fill_for(image, fill))


# ------------------------------------------------------------------------------ resize and crop steps


def _pair(size: Any) -> tuple[int, int]:
    """(height, width) from an int, a 1-sequence or a pair, as open_clip's transforms accept sizes."""
    values = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    values = values * 2 if len(values) == 1 else values
    ok = len(values) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in values)
    if not ok:
        raise ValueError(f"size={size!r} is invalid; use a positive int or a (height, width) pair of positive ints")
    return int(values[0]), int(values[1])


def interpolation_name(interpolation: Any) -> str:
    """A resize filter name from a string or an enum whose value is one (torchvision's ``InterpolationMode``)."""
    name = getattr(interpolation, "value", interpolation)
    name = "bicubic" if name == "random" else name
    if name not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is invalid; choose one of {list(INTERPOLATIONS)}")
    return name


class ResizeShortestSide:
    """Step: scale so the shorter side equals ``size``; the longer side is truncated as torchvision does."""

    def __init__(self, size: int, *, interpolation: str) -> None:
        self.size = size
        self.interpolation = interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(self.size * long / short)
        new_size = (self.size, new_long) if width <= height else (new_long, self.size)
        return resize_image(image, new_size, self.interpolation)

    def __repr__(self) -> str:
        return f"ResizeShortestSide(size={self.size}, interpolation={self.interpolation})"


class ResizeKeepRatio:
    """Step: scale keeping the aspect ratio so the longest (``longest=1``) or shortest (0) side fits the size.

    open_clip's (and timm's) class with its arguments: ``longest`` in [0, 1] blends the two ratios, and the
    optional random scale and aspect jitter draw from Python's ``random`` as open_clip's does.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        longest: float = 0.0,
        interpolation: Any = "bicubic",
        random_scale_prob: float = 0.0,
        random_scale_range: tuple[float, float] = (0.85, 1.05),
        random_aspect_prob: float = 0.0,
        random_aspect_range: tuple[float, float] = (0.9, 1.11),
    ) -> None:
        self.size = _pair(size)
        self.longest = float(longest)
        self.interpolation = interpolation_name(interpolation)
        self.random_scale_prob = random_scale_prob
        self.random_scale_range = random_scale_range
        self.random_aspect_prob = random_aspect_prob
        self.random_aspect_range = random_aspect_range

    @staticmethod
    def get_params(
        img: Image.Image,
        target_size: tuple[int, int],
        longest: float,
        random_scale_prob: float = 0.0,
        random_scale_range: tuple[float, float] = (0.85, 1.05),
        random_aspect_prob: float = 0.0,
        random_aspect_range: tuple[float, float] = (0.9, 1.11),
    ) -> list[int]:
        """The [height, width] to resize ``img`` to (Python's round, half to even, as open_clip)."""
        height, width = img.size[::-1]
        ratio_h, ratio_w = height / target_size[0], width / target_size[1]
        ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
        factors = (1.0, 1.0)
        if random_scale_prob > 0 and random.random() < random_scale_prob:
            factors = (random.uniform(*random_scale_range),) * 2
        if random_aspect_prob > 0 and random.random() < random_aspect_prob:
            aspect = random.uniform(*random_aspect_range)
            factors = (factors[0] / aspect, factors[1] * aspect)
        return [round(height * factors[0] / ratio), round(width * factors[1] / ratio)]

    def __call__(self, image: Image.Image) -> Image.Image:
        height, width = self.get_params(
            image,
            self.size,
            self.longest,
            self.random_scale_prob,
            self.random_scale_range,
            self.random_aspect_prob,
            self.random_aspect_range,
        )
        return resize_image(image, (width, height), self.interpolation)

    def __repr__(self) -> str:
        return f"ResizeKeepRatio(size={self.size}, longest={self.longest}, interpolation={self.interpolation})"


class Resize:
    """Step: scale to exactly (height, width), ignoring the aspect ratio."""

    def __init__(self, size: tuple[int, int], *, interpolation: str) -> None:
        self.size = size
        self.interpolation = interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        return resize_image(image, (self.size[1], self.size[0]), self.interpolation)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, interpolation={self.interpolation})"


class CenterCropOrPad:
    """Step: pad with ``fill`` where smaller than ``size`` (height, width), then crop the centre.

    open_clip's class with its arguments, on PIL images. Padding happens in the image's own mode as torchvision's
    does: ``fill`` is repeated per band (a palette index for P images), so open_clip's output follows for every mode.
    """

    def __init__(self, size: int | Sequence[int], fill: int | Sequence[int] = 0) -> None:
        self.size = _pair(size)
        self.fill = fill

    def __call__(self, image: Image.Image) -> Image.Image:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}; convert with PIL.Image.fromarray")
        crop_h, crop_w = self.size
        width, height = image.size
        if crop_w > width or crop_h > height:
            pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
            image = pad_image(image, (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2), self.fill)
            width, height = image.size
            if (width, height) == (crop_w, crop_h):
                return image
        top = int(round((height - crop_h) / 2.0))
        left = int(round((width - crop_w) / 2.0))
        return image.crop((left, top, left + crop_w, top + crop_h))

    def __repr__(self) -> str:
        return f"CenterCropOrPad(size={self.size}, fill={self.fill})"
