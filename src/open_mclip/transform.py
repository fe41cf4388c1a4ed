"""Image preprocessing with Pillow and torch only: configs, eval resizing and cropping, and the train and eval
transforms (image basics are in image_ops.py, training augmentations in augment.py).

The eval transform reproduces open_clip 3.3.0's ``image_transform_v2`` output for RGB images (same resize
rounding, crop offsets, padding, tensor conversion and normalisation) without importing torchvision.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from .augment import DEFAULT_RATIO, ColorJitter, RandomGrayscale, RandomResizedCrop
from .constants import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
)
from .image_ops import INTERPOLATIONS, ToRGB, load_image, resize_image, to_rgb, to_tensor

__all__ = [
    "AugmentationConfig", "PreprocessConfig", "ImageTransform", "image_transform", "load_image", "to_rgb",
    "to_tensor", "ToRGB", "RandomResizedCrop", "ColorJitter", "RandomGrayscale", "OPENAI_DATASET_MEAN",
    "OPENAI_DATASET_STD", "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD",
]  # fmt: skip


_RESIZE_MODES = ("shortest", "longest", "squash")


# ----------------------------------------------------------------------------------------------- configs


def _check_keys(cls: type, d: Any, source: str) -> None:
    """Reject a non-dict or a key that ``cls`` has no field for, naming the key and where it came from."""
    if not isinstance(d, dict):
        raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(d).__name__} from {source}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in known:
            raise ValueError(f"unknown key {key!r} for {cls.__name__} in {source}; known keys: {', '.join(known)}")


def _size_value(size: Any) -> int | tuple[int, int]:
    """Validate an image size: a positive int or a (height, width) pair of them."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        size = (size[0], size[1])
        parts = size
    else:
        parts = (size,)
    if not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) and p > 0 for p in parts):
        raise ValueError(f"size={size!r} is invalid; use a positive int or a (height, width) pair of positive ints")
    return tuple(int(p) for p in size) if isinstance(size, tuple) else int(size)


def _channel_values(value: Any, *, name: str, positive: bool) -> tuple[float, ...]:
    """Validate a per-channel mean or std: one number (used for all 3 channels) or 3 numbers."""
    values = (value,) * 3 if isinstance(value, numbers.Real) else tuple(value)
    ok = len(values) == 3 and all(isinstance(v, numbers.Real) and (v > 0 or not positive) for v in values)
    if not ok:
        rule = "positive " if positive else ""
        raise ValueError(f"{name}={value!r} is invalid; give 3 {rule}numbers (one per RGB channel)")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are turned into model input; travels with a model config and a pretrained entry."""

    size: int | tuple[int, int] = 224
    mode: str = "RGB"
    mean: tuple[float, ...] = OPENAI_DATASET_MEAN
    std: tuple[float, ...] = OPENAI_DATASET_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise JSON lists to tuples once, here
        set_(self, "size", _size_value(self.size))
        set_(self, "mean", _channel_values(self.mean, name="mean", positive=False))
        set_(self, "std", _channel_values(self.std, name="std", positive=True))
        if self.mode != "RGB":
            raise ValueError(f"mode={self.mode!r} is not supported; only 'RGB' is")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r} is invalid; choose one of {list(INTERPOLATIONS)}")
        if self.resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode={self.resize_mode!r} is invalid; choose one of {list(_RESIZE_MODES)}")
        fill = self.fill_color
        if not isinstance(fill, numbers.Integral) or isinstance(fill, bool) or not 0 <= fill <= 255:
            raise ValueError(f"fill_color={fill!r} is invalid; use an int grey level in 0..255")

    @property
    def image_size(self) -> tuple[int, int]:
        """The output (height, width)."""
        return (self.size, self.size) if isinstance(self.size, int) else self.size

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "<dict>") -> PreprocessConfig:
        """Build from a JSON-like dict; an unknown key is an error naming the key and ``source``."""
        _check_keys(cls, d, source)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that ``from_dict`` accepts back."""
        return dataclasses.asdict(self)

    def merged(self, **overrides: Any) -> PreprocessConfig:
        """A new config with ``overrides`` applied; ``None`` values are skipped (meaning "keep")."""
        _check_keys(type(self), overrides, "merged()")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class AugmentationConfig:
    """Training augmentation settings, with open_clip's ``AugmentationCfg`` field names and meanings."""

    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] | None = None
    color_jitter: float | tuple[float, ...] | None = None
    re_prob: float | None = None
    re_count: int | None = None
    use_timm: bool = False
    color_jitter_prob: float | None = None
    gray_scale_prob: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _range_value(self.scale, name="scale"))
        if self.ratio is not None:
            object.__setattr__(self, "ratio", _range_value(self.ratio, name="ratio"))
        if isinstance(self.color_jitter, list):
            object.__setattr__(self, "color_jitter", tuple(self.color_jitter))
        for name in ("color_jitter_prob", "gray_scale_prob", "re_prob"):
            p = getattr(self, name)
            if p is not None and not (isinstance(p, numbers.Real) and 0.0 <= p <= 1.0):
                raise ValueError(f"{name}={p!r} is invalid; use a probability in [0, 1]")

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "<dict>") -> AugmentationConfig:
        """Build from a JSON-like dict; an unknown key is an error naming the key and ``source``."""
        _check_keys(cls, d, source)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that ``from_dict`` accepts back."""
        return dataclasses.asdict(self)


def _range_value(value: Any, *, name: str) -> tuple[float, float]:
    """Validate a (low, high) range of positive numbers."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, numbers.Real) and v > 0 for v in value) and value[0] <= value[1]
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid; give (low, high) with 0 < low <= high")
    return float(value[0]), float(value[1])


def _jitter_strengths(color_jitter: Any) -> tuple[float, float, float, float]:
    """Brightness, contrast, saturation and hue strengths from one number or 3 or 4 numbers (hue 0 if absent)."""
    values = (color_jitter,) * 3 if isinstance(color_jitter, numbers.Real) else tuple(color_jitter or ())
    if len(values) == 3:
        values = (*values, 0.0)
    ok = len(values) == 4 and all(isinstance(v, numbers.Real) and v >= 0 for v in values) and values[3] <= 0.5
    if not ok:
        raise ValueError(
            f"color_jitter={color_jitter!r} is invalid; give (brightness, contrast, saturation[, hue]) "
            "strengths >= 0 with hue <= 0.5"
        )
    return tuple(float(v) for v in values)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ the steps


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
    """Step: scale keeping the aspect ratio so the longest (or shortest) side fits (height, width)."""

    def __init__(self, size: tuple[int, int], *, longest: bool, interpolation: str) -> None:
        self.size = size
        self.longest = longest
        self.interpolation = interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        ratio_h, ratio_w = height / self.size[0], width / self.size[1]
        ratio = max(ratio_h, ratio_w) if self.longest else min(ratio_h, ratio_w)
        # Python's round (half to even), as open_clip's ResizeKeepRatio
        return resize_image(image, (round(width / ratio), round(height / ratio)), self.interpolation)

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
    """Step: pad with ``fill`` where smaller than (height, width), then crop the centre (torchvision's offsets)."""

    def __init__(self, size: tuple[int, int], *, fill: int = 0) -> None:
        self.size = size
        self.fill = fill

    def __call__(self, image: Image.Image) -> Image.Image:
        crop_h, crop_w = self.size
        width, height = image.size
        if crop_w > width or crop_h > height:
            left, top = max(crop_w - width, 0) // 2, max(crop_h - height, 0) // 2
            padded_w, padded_h = max(width, crop_w), max(height, crop_h)
            canvas = Image.new(image.mode, (padded_w, padded_h), (self.fill,) * len(image.getbands()))
            canvas.paste(image, (left, top))
            image, width, height = canvas, padded_w, padded_h
            if (width, height) == (crop_w, crop_h):
                return image
        top = int(round((height - crop_h) / 2.0))
        left = int(round((width - crop_w) / 2.0))
        return image.crop((left, top, left + crop_w, top + crop_h))

    def __repr__(self) -> str:
        return f"CenterCropOrPad(size={self.size}, fill={self.fill})"


# ------------------------------------------------------------------------------------- the transform


class ImageTransform:
    """A PIL image -> normalised float32 (3, height, width) tensor; plain attributes, so it pickles."""

    def __init__(
        self, steps: Sequence[Callable[[Image.Image], Image.Image]], *, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        self.steps = list(steps)
        self.mean = mean
        self.std = std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}; convert with PIL.Image.fromarray")
        for step in self.steps:
            image = step(image)
        tensor = to_tensor(image)  # (3, height, width)
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std)

    def __repr__(self) -> str:
        lines = [f"  {step!r}," for step in self.steps]
        lines += ["  ToTensor(),", f"  Normalize(mean={self.mean}, std={self.std}),"]
        return "ImageTransform(\n" + "\n".join(lines) + "\n)"


def _eval_steps(cfg: PreprocessConfig) -> list[Callable[[Image.Image], Image.Image]]:
    """Resize and crop as open_clip's eval transform does for each resize mode."""
    size = cfg.image_size
    if cfg.resize_mode == "longest":
        return [
            ResizeKeepRatio(size, longest=True, interpolation=cfg.interpolation),
            CenterCropOrPad(size, fill=cfg.fill_color),
        ]
    if cfg.resize_mode == "squash":
        return [Resize(size, interpolation=cfg.interpolation)]
    if size[0] == size[1]:
        resize: Callable[[Image.Image], Image.Image] = ResizeShortestSide(size[0], interpolation=cfg.interpolation)
    else:
        # open_clip resizes a non-square "shortest" target with bicubic whatever the configured interpolation
        resize = ResizeKeepRatio(size, longest=False, interpolation="bicubic")
    return [resize, CenterCropOrPad(size, fill=0)]


def _train_steps(cfg: PreprocessConfig, aug: AugmentationConfig) -> list[Callable[[Image.Image], Image.Image]]:
    """Random resized crop (bicubic, as open_clip) and optional colour jitter and grayscale."""
    if aug.use_timm or aug.re_prob or aug.re_count:
        raise ValueError(
            "timm augmentation is not supported; unset use_timm, re_prob and re_count in the augmentation config"
        )
    if aug.color_jitter is not None and not aug.color_jitter_prob:
        raise ValueError(
            f"color_jitter={aug.color_jitter!r} is set but color_jitter_prob is not; set color_jitter_prob "
            "(e.g. 0.8) to apply it, or remove color_jitter"
        )
    ratio = aug.ratio or DEFAULT_RATIO
    steps: list[Callable[[Image.Image], Image.Image]] = [
        RandomResizedCrop(cfg.image_size, scale=aug.scale, ratio=ratio, interpolation="bicubic")
    ]
    if aug.color_jitter_prob:
        steps.append(ColorJitter(*_jitter_strengths(aug.color_jitter), p=aug.color_jitter_prob))
    if aug.gray_scale_prob:
        steps.append(RandomGrayscale(p=aug.gray_scale_prob))
    return steps


def image_transform(
    cfg: PreprocessConfig, *, is_train: bool, aug_cfg: AugmentationConfig | None = None
) -> ImageTransform:
    """The train or eval transform for ``cfg``: PIL image in, normalised float32 (3, height, width) tensor out.

    Images are converted to RGB first (open_clip converts after resizing; identical for RGB input).
    """
    if not isinstance(cfg, PreprocessConfig):
        raise TypeError(f"cfg must be a PreprocessConfig, got {type(cfg).__name__}; use PreprocessConfig.from_dict")
    if aug_cfg is not None and not isinstance(aug_cfg, AugmentationConfig):
        raise TypeError(
            f"aug_cfg must be an AugmentationConfig or None, got {type(aug_cfg).__name__}; "
            "use AugmentationConfig.from_dict"
        )
    if is_train:
        steps = _train_steps(cfg, aug_cfg or AugmentationConfig())
    else:
        steps = _eval_steps(cfg)
    return ImageTransform([ToRGB(), *steps], mean=cfg.mean, std=cfg.std)
