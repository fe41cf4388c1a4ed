"""Image preprocessing with Pillow and torch only: configs, the train and eval transforms, and open_clip's public
transform names as thin adapters over them (mode, resize and crop steps are in image_ops.py, training augmentations
in augment.py).

By default the transforms reproduce open_clip 3.3.0's ``image_transform_v2`` output for every image mode open_clip
handles sanely: resizing and cropping happen in the image's own mode and ``convert("RGB")`` comes after them, as in
open_clip. ``PreprocessConfig.rgb_conversion`` selects our conversion before resizing instead (docs/preprocessing.md).
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
from .image_ops import (
    INTERPOLATIONS,
    RGB_CONVERSIONS,
    WHITE,
    CenterCropOrPad,
    ConvertToRGB,
    PrepareMode,
    Resize,
    ResizeKeepRatio,
    ResizeShortestSide,
    interpolation_name,
    load_image,
    to_rgb,
    to_tensor,
)

__all__ = [
    "AugmentationConfig",
    "RESIZE_MODES",
    "AugmentationCfg",
    "PreprocessConfig",
    "PreprocessCfg",
    "ImageTransform",
    "image_transform",
    "image_transform_v2",
    "merge_preprocess_dict",
    "merge_preprocess_kwargs",
    "load_image",
    "to_rgb",
    "to_tensor",
    "PrepareMode",
    "ConvertToRGB",
    "ResizeKeepRatio",
    "CenterCropOrPad",
    "RandomResizedCrop",
    "ColorJitter",
    "RandomGrayscale",
    "OPENAI_DATASET_MEAN",
    "OPENAI_DATASET_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
]


RESIZE_MODES = ("shortest", "longest", "squash")
# "random" is open_clip's spelling for timm's random train interpolation; without timm it resizes bicubic
_CONFIG_INTERPOLATIONS = (*INTERPOLATIONS, "random")


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


def _grey_level(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= 255


def _choice(value: Any, *, name: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is invalid; choose one of {list(choices)}")


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are turned into model input; travels with a model config and a pretrained entry.

    The first seven fields are open_clip's ``PreprocessCfg``. Two more choose how a non-RGB image becomes RGB:

    - ``rgb_conversion="after_resize"`` (default, open_clip's result): resize and crop in the image's own mode,
      then ``convert("RGB")``, which drops alpha; Pillow resizes RGBA/LA premultiplied and P/1 nearest-neighbour.
      Only where open_clip mangles the image does a conversion come first: 16-bit and float greyscale (I;16*, I,
      F) are rescaled to 8 bits (``convert`` clips them) and PA becomes RGBA (Pillow would interpolate its indices).
    - ``rgb_conversion="before_resize"``: convert to RGB first, compositing transparency over
      ``background_color`` (an (r, g, b) of ints 0..255, white by default) and resampling palette and 1-bit
      images with ``interpolation``.
    """

    size: int | tuple[int, int] = 224
    mode: str = "RGB"
    mean: tuple[float, ...] = OPENAI_DATASET_MEAN
    std: tuple[float, ...] = OPENAI_DATASET_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0
    rgb_conversion: str = "after_resize"
    background_color: tuple[int, int, int] = WHITE

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise JSON lists to tuples once, here
        set_(self, "size", _size_value(self.size))
        set_(self, "mean", _channel_values(self.mean, name="mean", positive=False))
        set_(self, "std", _channel_values(self.std, name="std", positive=True))
        if self.mode != "RGB":
            raise ValueError(f"mode={self.mode!r} is not supported; only 'RGB' is")
        _choice(self.interpolation, name="interpolation", choices=_CONFIG_INTERPOLATIONS)
        _choice(self.resize_mode, name="resize_mode", choices=RESIZE_MODES)
        _choice(self.rgb_conversion, name="rgb_conversion", choices=RGB_CONVERSIONS)
        if not _grey_level(self.fill_color):
            raise ValueError(f"fill_color={self.fill_color!r} is invalid; use an int grey level in 0..255")
        background = self.background_color
        if not (isinstance(background, (list, tuple)) and len(background) == 3 and all(map(_grey_level, background))):
            raise ValueError(f"background_color={background!r} is invalid; use (r, g, b) with ints in 0..255")
        set_(self, "background_color", tuple(int(v) for v in background))

    @property
    def image_size(self) -> tuple[int, int]:
        """The output (height, width)."""
        return (self.size, self.size) if isinstance(self.size, int) else self.size

    @property
    def num_channels(self) -> int:
        """Channels of the model input (open_clip's ``PreprocessCfg.num_channels``)."""
        return 3

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of the model input (open_clip's ``PreprocessCfg.input_size``)."""
        return (self.num_channels, *self.image_size)

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


# ------------------------------------------------------------------------------------- the transform


class ImageTransform:
    """A PIL image -> normalised float32 (3, height, width) tensor; plain attributes, so it pickles. ``size`` is the
    (height, width) it produces, when the builder knows it (what a loader may decode a JPEG down to)."""

    def __init__(
        self,
        steps: Sequence[Callable[[Image.Image], Image.Image]],
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        size: tuple[int, int] | None = None,
    ) -> None:
        self.steps = list(steps)
        self.mean = mean
        self.std = std
        self.size = size

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
    size, interpolation = cfg.image_size, interpolation_name(cfg.interpolation)
    if cfg.resize_mode == "longest":
        return [ResizeKeepRatio(size, 1.0, interpolation), CenterCropOrPad(size, fill=cfg.fill_color)]
    if cfg.resize_mode == "squash":
        return [Resize(size, interpolation=interpolation)]
    if size[0] == size[1]:
        resize: Callable[[Image.Image], Image.Image] = ResizeShortestSide(size[0], interpolation=interpolation)
    else:
        resize = ResizeKeepRatio(size)  # open_clip resizes a non-square "shortest" target bicubic, whatever is set
    return [resize, CenterCropOrPad(size, fill=0)]


def _train_steps(cfg: PreprocessConfig, aug: AugmentationConfig) -> tuple[RandomResizedCrop, list[Callable]]:
    """Random resized crop (bicubic, as open_clip) and the optional colour jitter and grayscale after it."""
    if aug.use_timm or aug.re_prob or aug.re_count:
        raise ValueError(
            "timm augmentation is not supported; unset use_timm, re_prob and re_count in the augmentation config"
        )
    if aug.color_jitter is not None and not aug.color_jitter_prob:
        raise ValueError(
            f"color_jitter={aug.color_jitter!r} is set but color_jitter_prob is not; set color_jitter_prob "
            "(e.g. 0.8) to apply it, or remove color_jitter"
        )
    crop = RandomResizedCrop(cfg.image_size, scale=aug.scale, ratio=aug.ratio or DEFAULT_RATIO, interpolation="bicubic")
    colour: list[Callable[[Image.Image], Image.Image]] = []
    if aug.color_jitter_prob:
        colour.append(ColorJitter(*_jitter_strengths(aug.color_jitter), p=aug.color_jitter_prob))
    if aug.gray_scale_prob:
        colour.append(RandomGrayscale(p=aug.gray_scale_prob))
    return crop, colour


def _build_transform(cfg: PreprocessConfig, *, is_train: bool, aug: AugmentationConfig) -> ImageTransform:
    """The one implementation: mode preparation, geometric steps, ``convert("RGB")``, colour steps, tensor."""
    prepare = PrepareMode(rgb_first=cfg.rgb_conversion == "before_resize", background=cfg.background_color)
    if is_train:
        crop, colour = _train_steps(cfg, aug)
        steps = [prepare, crop, ConvertToRGB(), *colour]
    else:
        steps = [prepare, *_eval_steps(cfg), ConvertToRGB()]
    return ImageTransform(steps, mean=cfg.mean, std=cfg.std, size=cfg.image_size)


# ------------------------------------------------------------------------- open_clip's public names


PreprocessCfg = PreprocessConfig
AugmentationCfg = AugmentationConfig
_PREPROCESS_KEYS = tuple(f.name for f in dataclasses.fields(PreprocessConfig))


def _augmentation(aug_cfg: Any) -> AugmentationConfig:
    """An ``AugmentationConfig`` from None, a dict (as open_clip accepts) or an ``AugmentationConfig``."""
    if aug_cfg is None:
        return AugmentationConfig()
    if isinstance(aug_cfg, dict):
        return AugmentationConfig.from_dict(aug_cfg, source="aug_cfg")
    if not isinstance(aug_cfg, AugmentationConfig):
        raise TypeError(
            f"aug_cfg must be an AugmentationConfig, a dict or None, got {type(aug_cfg).__name__}; "
            "use AugmentationConfig.from_dict"
        )
    return aug_cfg


def image_transform(
    image_size: int | tuple[int, int] | PreprocessConfig,
    is_train: bool,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    resize_mode: str | None = None,
    interpolation: str | None = None,
    fill_color: int = 0,
    aug_cfg: dict[str, Any] | AugmentationConfig | None = None,
) -> ImageTransform:
    """The train or eval transform: PIL image in, normalised float32 (3, height, width) tensor out.

    open_clip's signature and defaults; the first argument may also be a whole ``PreprocessConfig`` (then leave
    the separate settings unset and use ``cfg.merged(...)`` to change any).
    """
    if isinstance(image_size, PreprocessConfig):
        separate = {"mean": mean, "std": std, "resize_mode": resize_mode, "interpolation": interpolation}
        given = [k for k, v in separate.items() if v is not None] + (["fill_color"] if fill_color != 0 else [])
        if given:
            raise TypeError(
                f"{', '.join(given)} given with a PreprocessConfig; pass cfg.merged({given[0]}=...) instead"
            )
        cfg = image_size
    else:
        cfg = PreprocessConfig(
            size=image_size,
            mean=mean or OPENAI_DATASET_MEAN,
            std=std or OPENAI_DATASET_STD,
            interpolation=interpolation or "bicubic",
            resize_mode=resize_mode or "shortest",
            fill_color=fill_color,
        )
    return _build_transform(cfg, is_train=is_train, aug=_augmentation(aug_cfg))


def image_transform_v2(
    cfg: PreprocessConfig, is_train: bool, aug_cfg: dict[str, Any] | AugmentationConfig | None = None
) -> ImageTransform:
    """open_clip's ``image_transform_v2``: the transform for a ``PreprocessCfg`` (or anything with its fields)."""
    if isinstance(cfg, PreprocessConfig):
        return image_transform(cfg, is_train, aug_cfg=aug_cfg)
    return image_transform(
        cfg.size, is_train, cfg.mean, cfg.std, cfg.resize_mode, cfg.interpolation, cfg.fill_color, aug_cfg
    )


def merge_preprocess_dict(base: PreprocessConfig | dict[str, Any], overlay: dict[str, Any] | None) -> dict[str, Any]:
    """open_clip's merge: ``base`` (a config or dict) as a dict, with the non-None ``overlay`` values on top.

    As in open_clip, keys that are not ``PreprocessConfig`` fields are dropped from both.
    """
    items = dataclasses.asdict(base) if dataclasses.is_dataclass(base) else dict(base)
    merged = {k: v for k, v in items.items() if k in _PREPROCESS_KEYS}
    merged.update({k: v for k, v in (overlay or {}).items() if k in _PREPROCESS_KEYS and v is not None})
    return merged


def merge_preprocess_kwargs(base: PreprocessConfig | dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """open_clip's ``merge_preprocess_kwargs``: ``merge_preprocess_dict(base, kwargs)``."""
    return merge_preprocess_dict(base, kwargs)
