"""Queries and filters. A query is a weighted sum of terms, each a text (any language), an image file, or an
indexed image ("more like this"): `"cat" + photo.jpg - "fruit"`, `2*"red car" - 0.5*"night"`, or plain text.
Filters narrow the rows by path glob, modification date and image size before ranking."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import os
import re
from collections.abc import Callable, Sequence

import numpy as np

from .sources import IMAGE_EXTENSIONS

TERM_KINDS = ("text", "image", "like")
_WEIGHT = re.compile(r"^(?P<weight>\d+(?:\.\d*)?|\.\d+)\s*[*:]\s*(?P<term>.+)$", re.S)
_QUOTES = ("'", '"', "\u201c\u201d", "\u00ab\u00bb", "\u300c\u300d")  # ASCII, “…”, «…», 「…」


@dataclasses.dataclass(frozen=True)
class Term:
    """One part of a query: `kind` "text" (a text to embed), "image" (an image file) or "like" (the key of an
    indexed image, whose stored vector is used), times `weight` (negative subtracts)."""

    kind: str
    value: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in TERM_KINDS:
            raise ValueError(f"query term kind {self.kind!r} must be one of {TERM_KINDS}")
        if not self.value.strip():
            raise ValueError(f"empty {self.kind} in a query term; give a text, an image file or an indexed path")


def _split_terms(expression: str) -> list[tuple[float, str]]:
    """(sign, piece) at each top-level " + " / " - " (an operator with spaces around it, outside quotes)."""
    pieces, sign, current, quote = [], 1.0, [], None
    closers = {q[0]: q[-1] for q in _QUOTES}
    i = 0
    while i < len(expression):
        ch = expression[i]
        if quote is None and ch in closers and not "".join(current).strip():
            quote = closers[ch]
        elif quote is not None and ch == quote:
            quote = None
        elif quote is None and ch in "+-" and _is_operator(expression, i):
            if "".join(current).strip():
                pieces.append((sign, "".join(current).strip()))
            elif pieces:
                raise ValueError(f"query {expression!r} has two operators in a row at position {i}")
            sign, current = (1.0 if ch == "+" else -1.0), []
            i += 1
            continue
        current.append(ch)
        i += 1
    if quote is not None:
        raise ValueError(f"query {expression!r} has an unclosed quote {quote!r}")
    if "".join(current).strip():
        pieces.append((sign, "".join(current).strip()))
    return pieces


def _is_operator(text: str, i: int) -> bool:
    before = i == 0 or text[i - 1].isspace()
    after = i + 1 == len(text) or text[i + 1].isspace()
    return before and after


def _unquote(piece: str) -> tuple[str, bool]:
    for pair in _QUOTES:
        if len(piece) >= 2 and piece[0] == pair[0] and piece[-1] == pair[-1]:
            return piece[1:-1], True
    return piece, False


def is_image_path(piece: str, *, exists: Callable[[str], bool] = os.path.isfile) -> bool:
    return "." in piece and piece.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS and exists(os.path.expanduser(piece))


def parse_query(expression: str, *, exists: Callable[[str], bool] = os.path.isfile) -> list[Term]:
    """Terms of a query expression. Quoted pieces are texts; an unquoted piece naming an existing image file is an
    image; anything else is text ("a cat on a mat" is one text term)."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError("the query is empty: give a text (any language), an image file, or both")
    terms = []
    for sign, piece in _split_terms(expression):
        weight = 1.0
        match = _WEIGHT.match(piece)
        if match:
            weight, piece = float(match["weight"]), match["term"].strip()
        text, quoted = _unquote(piece)
        kind = "image" if not quoted and is_image_path(text, exists=exists) else "text"
        value = os.path.expanduser(text) if kind == "image" else text
        terms.append(Term(kind, value, sign * weight))
    if not terms:
        raise ValueError(f"query {expression!r} has no terms")
    return terms


def combine(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The weighted sum of unit vectors (terms, dim), renormalised: the query vector."""
    total = np.asarray(weights, dtype=np.float32) @ vectors  # (dim,)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise ValueError("the query terms cancel out (their weighted sum is zero); change a weight or a term")
    return total / norm


def parse_date(value: str | float | dt.date | None, *, name: str) -> float | None:
    """A date or time ("2024-05-31", "2024-05-31T12:00", a datetime or a POSIX timestamp) as a timestamp."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as err:
            raise ValueError(f"{name}={value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from err
    return value.timestamp()


@dataclasses.dataclass(frozen=True)
class Filters:
    """Row filters: `path_glob` (fnmatch on the indexed path; "*" also crosses "/"), modification time in
    [`modified_after`, `modified_before`) as timestamps (see `parse_date`), and image size in pixels."""

    path_glob: str | None = None
    modified_after: float | None = None
    modified_before: float | None = None
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None and v != "" for v in dataclasses.asdict(self).values())

    def mask(self, columns: dict[str, list]) -> np.ndarray:
        """(rows,) bool: which rows pass every filter."""
        keep = np.ones(len(columns["image_path"]), dtype=bool)
        if self.path_glob:
            keep &= np.array([fnmatch.fnmatchcase(p, self.path_glob) for p in columns["image_path"]], dtype=bool)
        mtime = np.asarray(columns["mtime"], dtype=np.float64)
        if self.modified_after is not None:
            keep &= mtime >= self.modified_after
        if self.modified_before is not None:
            keep &= mtime < self.modified_before
        for bound, column, low in (
            (self.min_width, "width", True),
            (self.min_height, "height", True),
            (self.max_width, "width", False),
            (self.max_height, "height", False),
        ):
            if bound is not None:
                values = np.asarray(columns[column], dtype=np.int64)
                keep &= values >= bound if low else values <= bound
        return keep
