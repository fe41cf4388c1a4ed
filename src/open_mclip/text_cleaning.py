"""Text cleaning as open_clip's tokenizers do it (ftfy, HTML unescaping, whitespace, big_vision's canonical form),
with a shortcut past ftfy for text it would leave unchanged, and the input checks both tokenizers share."""

from __future__ import annotations

import html
import re
import string
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import ftfy

_PUNCTUATION = str.maketrans("", "", string.punctuation)


@lru_cache(maxsize=1)
def _ftfy_triggers() -> re.Pattern:
    """The characters one of ftfy's fixers acts on, read from ftfy's own tables: HTML entities (&), C1 controls,
    Latin ligatures, full/half-width forms, curly quotes, line breaks, surrogates, terminal escapes and the control
    characters it strips."""
    from ftfy import chardata

    chars = {"&", "\r", "\x1b", "\u2028", "\u2029"}
    chars |= {chr(c) for table in (chardata.LIGATURES, chardata.WIDTH_MAP, chardata.CONTROL_CHARS) for c in table}
    ranges = "\x80-\x9f\ud800-\udfff" + chardata.SINGLE_QUOTE_RE.pattern[1:-1] + chardata.DOUBLE_QUOTE_RE.pattern[1:-1]
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + ranges + "]")


def _ftfy_leaves_alone(text: str) -> bool:
    """True when ftfy.fix_text(text) is text itself: no character a fixer acts on, no mojibake by ftfy's own
    test (`is_bad`), already NFC. Most captions pass, and skip ftfy's dozen passes over the string (3/4 of the
    tokenizer's time); `tests/library/test_tokenizer_corpus.py` checks the claim against ftfy on a large corpus."""
    if _ftfy_triggers().search(text):
        return False
    if not text.isascii() and ftfy.badness.is_bad(text):
        return False
    return unicodedata.is_normalized("NFC", text)


def fix_text(text: str) -> str:
    """Repair mojibake with ftfy and undo (double) HTML escaping, as CLIP's web captions were cleaned."""
    if not _ftfy_leaves_alone(text):
        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def squash_whitespace(text: str) -> str:
    """Collapse every run of Unicode whitespace into one space and trim both ends."""
    return " ".join(text.split())


def canonicalize_text(text: str) -> str:
    """Lowercase, underscores to spaces, ASCII punctuation dropped (big_vision's prompt canonicalisation)."""
    text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    return squash_whitespace(text)


def _clean_lower(text: str) -> str:
    return squash_whitespace(fix_text(text)).lower()


def _clean_whitespace(text: str) -> str:
    return squash_whitespace(fix_text(text))


def _clean_canonicalize(text: str) -> str:
    return canonicalize_text(fix_text(text))


_CLEANERS: dict[str, Callable[[str], str]] = {
    "lower": _clean_lower,
    "whitespace": _clean_whitespace,
    "canonicalize": _clean_canonicalize,
}


def get_clean_fn(clean: str) -> Callable[[str], str]:
    """The text cleaning named ``clean`` ("lower", "whitespace" or "canonicalize"), as in open_clip."""
    try:
        return _CLEANERS[clean]
    except (KeyError, TypeError):
        raise ValueError(f"clean={clean!r} is not a known text cleaning; use one of {sorted(_CLEANERS)}") from None


def check_context_length(context_length: Any) -> int:
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length={context_length!r} must be a positive int (CLIP models use 77)")
    return context_length


def as_batch(texts: str | Sequence[str]) -> list[str]:
    """One string becomes a batch of one; anything else must be a sequence of strings."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
    batch = list(texts)
    for index, text in enumerate(batch):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is a {type(text).__name__} ({text!r}); every text must be a str")
    return batch
