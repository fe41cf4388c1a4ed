"""Reading, hashing and preprocessing images for the indexer, in DataLoader workers: a file that does not decode
becomes a row with its reason instead of an exception, so one bad image never stops an indexing run."""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from .sources import SourceItem


def decode_image(data: bytes, *, name: str) -> Image.Image:
    """Decode image bytes fully (so a truncated file fails here); the error names the image."""
    if not data:
        raise ValueError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, never decode gigapixels
            image = Image.open(io.BytesIO(data))
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(f"cannot decode image {name}: {err}") from err
    return image


class ImageRows(torch.utils.data.Dataset):
    """Items -> {"tensor", "sha256", "width", "height", "error", "known"}; an image whose content hash is in
    `known_hashes` (already embedded under another name or mtime) is hashed but not decoded."""

    def __init__(
        self,
        items: Sequence[SourceItem],
        preprocess: Callable[[Image.Image], torch.Tensor],
        *,
        known_hashes: frozenset[str] = frozenset(),
    ) -> None:
        self.items = list(items)
        self.preprocess = preprocess
        self.known_hashes = known_hashes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        row: dict[str, Any] = {"tensor": None, "sha256": "", "width": 0, "height": 0, "error": "", "known": False}
        try:
            data = item.read_bytes()
        except OSError as err:
            row["error"] = f"cannot read: {err.strerror or err}"
            return row
        row["sha256"] = hashlib.sha256(data).hexdigest()
        if row["sha256"] in self.known_hashes:
            row["known"] = True
            return row
        try:
            image = decode_image(data, name=item.key)
            row["width"], row["height"] = image.size
            row["tensor"] = self.preprocess(image)
        except (ValueError, TypeError, OSError) as err:
            row["error"] = str(err)
        return row


def collate_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: the decoded images stacked (batch, 3, h, w), which positions they are, and every row's fields."""
    decoded = [i for i, row in enumerate(rows) if row["tensor"] is not None]
    images = torch.stack([rows[i]["tensor"] for i in decoded]) if decoded else None
    for row in rows:
        row.pop("tensor")
    return {"images": images, "decoded": decoded, "rows": rows}
