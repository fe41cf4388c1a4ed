"""Turning one raw sample (shard entries or a CSV row) into an (image, tokens) pair, or a counted skip.

A decoder that reads language tags (validation) gives (image, tokens, lang) instead, lang "" when untagged.
An image is checked against the size bounds from its header, before it is decoded. A training sample is
preprocessed inside `fixed_draws(seed, epoch, sample...)`: its augmentation depends on the sample alone.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from open_mclip.image_ops import ImageBounds, ImageTooLargeError, draft_jpeg, load_image

from ..rng import fixed_draws
from .info import SkipCounter

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")  # in order of preference, as open_clip renames them
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

Pair = tuple[torch.Tensor, torch.Tensor]  # image (3, height, width), tokens (context_length,)
Tagged = tuple[torch.Tensor, torch.Tensor, str]  # a pair and its caption's language tag ("" when untagged)
Sample = Pair | Tagged
_LANG_TAG = re.compile(r"\w[\w-]{0,63}")  # "en", "pt-BR", "zh_Hant": letters, digits, "_" and "-"


_SIZE_REASONS = {"max_pixels": "too_many_pixels", "max_aspect_ratio": "extreme_aspect_ratio"}


def decode_image_bytes(
    data: bytes, *, bounds: ImageBounds | None = None, name: str = "image", draft: tuple[int, int] | None = None
) -> Image.Image:
    """Fully decode image bytes, so a truncated or non-image payload fails here and not in the transform; an image
    beyond ``bounds`` raises ``ImageTooLargeError`` from its header, before its pixels are decoded. ``draft``: a JPEG
    is decoded at a reduced scale keeping both sides at least that (--image-draft)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if bounds is not None:
                bounds.check(image.size, name=name)
            draft_jpeg(image, draft)
            image.load()
    except Image.DecompressionBombError as err:  # Pillow's own limit, at twice Image.MAX_IMAGE_PIXELS
        raise ImageTooLargeError(f"{name}: {err}", limit="max_pixels") from err
    return image


def _shard_caption(sample: dict[str, Any]) -> tuple[str | None, str | None]:
    """The caption of a shard sample as (text, skip reason): ``txt`` first, else ``json``'s "caption" field."""
    if "txt" in sample:
        try:
            return sample["txt"].decode("utf-8"), None
        except UnicodeDecodeError:
            return None, "bad_caption"
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except ValueError:
            return None, "bad_caption"
        caption = meta.get("caption") if isinstance(meta, dict) else None
        if isinstance(caption, str):
            return caption, None
    return None, "no_caption"


def _csv_caption(value: Any) -> tuple[str | None, str | None]:
    """A CSV cell as caption text (None or NaN, as other pandas settings give for a missing cell: no caption)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, "no_caption"
    return str(value), None


def parse_lang(value: Any) -> tuple[str | None, str | None]:
    """A language tag as (tag, skip reason): a missing value or blank text is untagged (""), text like "en" or
    "pt-BR" is the tag (outer spaces dropped), anything else (a number, a list, "en US") is "bad_lang"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", None
    if not isinstance(value, str):
        return None, "bad_lang"
    tag = value.strip()
    if tag and not _LANG_TAG.fullmatch(tag):
        return None, "bad_lang"
    return tag, None


def _shard_lang(sample: dict[str, Any], key: str) -> tuple[str | None, str | None]:
    """The language tag of a shard sample, field ``key`` of its ``json`` entry ("" without one), and a skip reason."""
    if "json" not in sample:
        return "", None
    try:
        meta = json.loads(sample["json"])
    except ValueError:
        return None, "bad_lang"
    return parse_lang(meta.get(key) if isinstance(meta, dict) else None)


class SampleDecoder:
    """Decodes, preprocesses and tokenizes samples; a bad sample is counted in ``skipped`` and gives None.

    With ``lang_key`` (validation) samples carry their caption's language tag: the CSV column or the field of
    the shard sample's ``json`` entry of that name. Images beyond ``bounds`` are skipped before decoding; with
    ``draft`` (width, height) JPEGs are decoded at a reduced scale that keeps both sides at least that. Each
    builder gives its decoder a ``SkipCounter`` sized for its data (``with_counter``). Picklable (it travels to
    each DataLoader worker).
    """

    def __init__(
        self,
        *,
        preprocess: Callable,
        tokenizer: Callable,
        skipped: SkipCounter | None = None,
        lang_key: str | None = None,
        bounds: ImageBounds | None = None,
        seed: int = 0,
        draft: tuple[int, int] | None = None,
    ) -> None:
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.skipped = skipped if skipped is not None else SkipCounter()
        self.lang_key = lang_key
        self.bounds = bounds
        self.seed = seed
        self.draft = draft

    def with_counter(self, skipped: SkipCounter) -> SampleDecoder:
        """This decoder counting its skips in ``skipped``."""
        decoder = copy.copy(self)
        decoder.skipped = skipped
        return decoder

    def from_shard(self, sample: dict[str, Any], *, draws: tuple[int, ...] | None = None) -> Sample | None:
        """A webdataset sample (dict of extension -> bytes, plus ``__key__``/``__url__`` and the ``__shard__`` index
        and ``__read__`` number it was counted under) as a pair, or None; ``draws`` keys its augmentation."""
        where = f"{sample.get('__key__')} in {sample.get('__url__')}"
        ledger = {"shard": sample.get("__shard__", 0), "read": sample.get("__read__", 0)}
        image_key = next((key for key in IMAGE_KEYS if key in sample), None)
        if image_key is None:
            entries = sorted(key for key in sample if not key.startswith("__"))
            return self._skip("no_image", f"{where} has entries {entries}, none of {list(IMAGE_KEYS)}", **ledger)
        caption, reason = _shard_caption(sample)
        if reason is None and not caption.strip():
            reason = "empty_caption"
        if reason is not None:
            return self._skip(reason, where, **ledger)
        lang, reason = _shard_lang(sample, self.lang_key) if self.lang_key is not None else ("", None)
        if reason is not None:
            detail = f"{where}: its json has no valid {self.lang_key!r} (a tag like 'en', 'pt-BR')"
            return self._skip(reason, detail, **ledger)
        try:
            image = decode_image_bytes(
                sample[image_key], bounds=self.bounds, name=f"{where}.{image_key}", draft=self.draft
            )
        except ImageTooLargeError as err:
            return self._skip(_SIZE_REASONS[err.limit], str(err), **ledger)
        except _DECODE_ERRORS as err:
            return self._skip("bad_image", f"{where}.{image_key}: {err}", **ledger)
        return self.sample(image, caption, lang=lang, draws=draws)

    def from_file(
        self,
        path: str,
        caption_value: Any,
        *,
        where: str,
        row: int,
        lang_value: Any = None,
        draws: tuple[int, ...] | None = None,
    ) -> Sample | None:
        """An image file and its caption cell (table ``row``), with its language cell if any, as a pair, or None."""
        caption, reason = _csv_caption(caption_value)
        if reason is None and not caption.strip():
            reason = "empty_caption"
        if reason is not None:
            return self._skip(reason, f"{where} ({path})", row=row)
        lang, reason = parse_lang(lang_value)
        if reason is not None:
            detail = f"{where}: {self.lang_key}={lang_value!r} is not a tag like 'en' or 'pt-BR'"
            return self._skip(reason, detail, row=row)
        image = self.image_file(path, where=where, row=row)
        return None if image is None else self.sample(image, caption, lang=lang, draws=draws)

    def image_file(self, path: str, *, where: str, row: int) -> Image.Image | None:
        """The decoded image file of table ``row``, or None (counted) when it is missing, broken or too large."""
        try:
            return load_image(path, bounds=self.bounds, draft=self.draft)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
            return self._skip("missing_image", f"{where}: {err}", row=row)
        except ImageTooLargeError as err:
            return self._skip(_SIZE_REASONS[err.limit], f"{where}: {err}", row=row)
        except ValueError as err:  # load_image names the file
            return self._skip("bad_image", f"{where}: {err}", row=row)

    def sample(
        self, image: Image.Image, caption: str, *, lang: str = "", draws: tuple[int, ...] | None = None
    ) -> Sample:
        """The preprocessed image and the caption's tokens, with ``lang`` when this decoder reads languages.

        With ``draws`` (training: epoch and sample), the transform's random draws are fixed by (seed, *draws)."""
        if draws is None:
            pixels = self.preprocess(image)
        else:
            with fixed_draws(self.seed, *draws):
                pixels = self.preprocess(image)
        pair = pixels, self.tokenizer([caption])[0]
        return pair if self.lang_key is None else (*pair, lang)

    def _skip(self, reason: str, detail: str, **ledger: int) -> None:
        self.skipped.add(reason, detail=detail, **ledger)
        return None


def resolve_path(path: Any, folder: str) -> str:
    """An image path from a CSV cell: absolute paths stay, relative ones are taken from the CSV's folder."""
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.join(folder, path)
