"""Image basics for preprocessing, with Pillow and torch only: reading a file, converting any mode to RGB,
resizing, and the PIL -> tensor conversion."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
WHITE = (255, 255, 255)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file, so that a broken file fails here and names itself."""
    try:
        with Image.open(path) as image:
            image.load()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise  # a missing or unreadable path is not a decoding problem
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
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

    open_clip calls ``convert("RGB")``, which drops alpha (whatever colour hides under transparent pixels shows)
    and clips 16-bit greyscale at 255 (photos come out white); both differ here on purpose. Opaque images
    convert exactly as ``convert("RGB")`` does.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}; convert with PIL.Image.fromarray")
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
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


class ToRGB:
    """Step: convert to RGB first (before resizing), so palette and 16-bit images resample correctly."""

    def __init__(self, *, background: tuple[int, int, int] = WHITE) -> None:
        self.background = background

    def __call__(self, image: Image.Image) -> Image.Image:
        return to_rgb(image, background=self.background)

    def __repr__(self) -> str:
        return f"ToRGB(background={self.background})"


def resize_image(image: Image.Image, width_height: tuple[int, int], interpolation: str) -> Image.Image:
    if image.size == width_height:
        return image
    return image.resize(width_height, INTERPOLATIONS[interpolation])
