"""Turning one raw sample (shard entries or a CSV row) into an (image, tokens) pair, or a counted skip.

A decoder that reads language tags (validation) gives (image, tokens, lang) instead, lang "" when untagged.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from open_mclip.transform import load_image

from .info import SkipCounter

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")  # in order of preference, as open_clip renames them
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

Pair = tuple[torch.Tensor, torch.Tensor]  # image (3, height, width), tokens (context_length,)
Tagged = tuple[torch.Tensor, torch.Tensor, str]  # a pair and its caption's language tag ("" when untagged)
Sample = Pair | Tagged
_LANG_TAG = re.compile(r"\w[\w-]{0,63}")  # "en", "pt-BR", "zh_Hant": letters, digits, "_" and "-"


def decode_image_bytes(data: bytes) -> Image.Image:
    """Fully decode image bytes, so a truncated or non-image payload fails here and not in the transform."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
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
    the shard sample's ``json`` entry of that name. Picklable (it travels to each DataLoader worker).
    """

    def __init__(
        self, *, preprocess: Callable, tokenizer: Callable, skipped: SkipCounter, lang_key: str | None = None
    ) -> None:
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.skipped = skipped
        self.lang_key = lang_key

    def from_shard(self, sample: dict[str, Any]) -> Sample | None:
        """A webdataset sample (dict of extension -> bytes, plus ``__key__``/``__url__``) as a pair, or None."""
        where = f"{sample.get('__key__')} in {sample.get('__url__')}"
        image_key = next((key for key in IMAGE_KEYS if key in sample), None)
        if image_key is None:
            entries = sorted(key for key in sample if not key.startswith("__"))
            return self._skip("no_image", f"{where} has entries {entries}, none of {list(IMAGE_KEYS)}")
        caption, reason = _shard_caption(sample)
        if reason is None and not caption.strip():
            reason = "empty_caption"
        if reason is not None:
            return self._skip(reason, where)
        lang, reason = _shard_lang(sample, self.lang_key) if self.lang_key is not None else ("", None)
        if reason is not None:
            return self._skip(reason, f"{where}: its json has no valid {self.lang_key!r} (a tag like 'en', 'pt-BR')")
        try:
            image = decode_image_bytes(sample[image_key])
        except _DECODE_ERRORS as err:
            return self._skip("bad_image", f"{where}.{image_key}: {err}")
        return self.sample(image, caption, lang=lang)

    def from_file(self, path: str, caption_value: Any, *, where: str, lang_value: Any = None) -> Sample | None:
        """An image file and its caption cell (from a CSV row), with its language cell if any, as a pair, or None."""
        caption, reason = _csv_caption(caption_value)
        if reason is None and not caption.strip():
            reason = "empty_caption"
        if reason is not None:
            return self._skip(reason, f"{where} ({path})")
        lang, reason = parse_lang(lang_value)
        if reason is not None:
            return self._skip(reason, f"{where}: {self.lang_key}={lang_value!r} is not a tag like 'en' or 'pt-BR'")
        try:
            image = load_image(path)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
            return self._skip("missing_image", f"{where}: {err}")
        except ValueError as err:  # load_image names the file
            return self._skip("bad_image", f"{where}: {err}")
        return self.sample(image, caption, lang=lang)

    def sample(self, image: Image.Image, caption: str, *, lang: str = "") -> Sample:
        """The preprocessed image and the caption's tokens, with ``lang`` when this decoder reads languages."""
        pair = self.preprocess(image), self.tokenizer([caption])[0]
        return pair if self.lang_key is None else (*pair, lang)

    def _skip(self, reason: str, detail: str) -> None:
        self.skipped.add(reason, detail=detail)
        return None


def resolve_path(path: Any, folder: str) -> str:
    """An image path from a CSV cell: absolute paths stay, relative ones are taken from the CSV's folder."""
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.join(folder, path)
