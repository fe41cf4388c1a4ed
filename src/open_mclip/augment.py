"""Training augmentations as preprocessing steps: random resized crop, colour jitter and random grayscale, drawing
their randomness from the torch RNG as torchvision does, so a seed gives open_clip's boxes and factors."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageEnhance

from .image_ops import resize_image

DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


class RandomResizedCrop:
    """Step: crop a random box of area fraction in ``scale`` and aspect in ``ratio``, resize to (height, width).

    Boxes are drawn with torchvision's algorithm and the global torch RNG, so ``torch.manual_seed`` reproduces
    them (and the same seed gives the same boxes as torchvision).
    """

    def __init__(
        self, size: tuple[int, int], *, scale: tuple[float, float], ratio: tuple[float, float], interpolation: str
    ) -> None:
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.interpolation = interpolation

    def sample_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random (top, left, box_height, box_width); the central crop when 10 draws all miss."""
        area = height * width
        log_ratio = torch.log(torch.tensor(self.ratio))  # float32, as torchvision
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
            aspect = torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]))).item()
            box_w = int(round(math.sqrt(target_area * aspect)))
            box_h = int(round(math.sqrt(target_area / aspect)))
            if 0 < box_w <= width and 0 < box_h <= height:
                top = int(torch.randint(0, height - box_h + 1, size=(1,)).item())
                left = int(torch.randint(0, width - box_w + 1, size=(1,)).item())
                return top, left, box_h, box_w
        return _central_box(width, height, self.ratio)

    def __call__(self, image: Image.Image) -> Image.Image:
        top, left, box_h, box_w = self.sample_box(*image.size)
        image = image.crop((left, top, left + box_w, top + box_h))
        return resize_image(image, (self.size[1], self.size[0]), self.interpolation)

    def __repr__(self) -> str:
        return (
            f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"interpolation={self.interpolation})"
        )


def _central_box(width: int, height: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """The largest central box whose aspect ratio is clamped into ``ratio``."""
    aspect = width / height
    box_w, box_h = width, height
    if aspect < min(ratio):
        box_h = int(round(width / min(ratio)))
    elif aspect > max(ratio):
        box_w = int(round(height * max(ratio)))
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


def _draw(p: float) -> bool:
    """True with probability ``p``; draws from the torch RNG only when the outcome is uncertain."""
    return p >= 1.0 or (p > 0.0 and torch.rand(1).item() < p)


class ColorJitter:
    """Step: with probability ``p``, adjust brightness, contrast, saturation and hue in a random order.

    Factors and order are drawn as torchvision's ColorJitter draws them from the torch RNG.
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, *, p: float) -> None:
        self.strengths = (brightness, contrast, saturation, hue)
        self.p = p

    def _factors(self) -> list[float | None]:
        factors: list[float | None] = []
        for index, strength in enumerate(self.strengths):
            if strength == 0:
                factors.append(None)  # torchvision draws nothing for a disabled adjustment
                continue
            low, high = (-strength, strength) if index == 3 else (max(1.0 - strength, 0.0), 1.0 + strength)
            factors.append(float(torch.empty(1).uniform_(low, high)))
        return factors

    def __call__(self, image: Image.Image) -> Image.Image:
        if not _draw(self.p):
            return image
        order = torch.randperm(4).tolist()
        factors = self._factors()
        adjust = (_adjust_brightness, _adjust_contrast, _adjust_saturation, _adjust_hue)
        for index in order:
            if factors[index] is not None:
                image = adjust[index](image, factors[index])
        return image

    def __repr__(self) -> str:
        b, c, s, h = self.strengths
        return f"ColorJitter(brightness={b}, contrast={c}, saturation={s}, hue={h}, p={self.p})"


def _adjust_brightness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def _adjust_contrast(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def _adjust_saturation(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Color(image).enhance(factor)


def _adjust_hue(image: Image.Image, factor: float) -> Image.Image:
    """Rotate the hue by ``factor`` of a turn, wrapping in 8 bits as torchvision does."""
    hue, saturation, value = image.convert("HSV").split()
    shift = int(factor * 255) % 256
    rotated = ((np.asarray(hue, dtype=np.uint16) + shift) % 256).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(rotated, "L"), saturation, value)).convert(image.mode)


class RandomGrayscale:
    """Step: with probability ``p``, replace the image by its luma in all 3 channels."""

    def __init__(self, *, p: float) -> None:
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("L").convert("RGB") if _draw(self.p) else image

    def __repr__(self) -> str:
        return f"RandomGrayscale(p={self.p})"
