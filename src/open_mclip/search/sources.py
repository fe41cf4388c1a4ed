"""Where the images of an index come from: a folder (recursive, by extension), a CSV/TSV of paths and captions, or
WebDataset tar shards. Each source lists `SourceItem`s: a key (the path relative to the source's root, which is what
the index stores), where the bytes are (a file, or a byte range of a tar shard), size, mtime and an optional caption.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import logging
import os
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
CAPTION_EXTENSIONS = ("txt", "caption")


@dataclasses.dataclass(frozen=True)
class SourceItem:
    """One image of a source; `offset` locates its `size` bytes inside `file` (a tar shard), -1: the whole file."""

    key: str
    file: str
    size: int
    mtime: float
    caption: str = ""
    offset: int = -1

    def read_bytes(self) -> bytes:
        with open(self.file, "rb") as f:
            if self.offset < 0:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)


@dataclasses.dataclass
class Scan:
    """What a source lists: the items, and the entries it refused with the reason (outside the root, ...)."""

    items: list[SourceItem]
    refused: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether `path`, with every symlink resolved, lies inside the real folder `root`."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    cleaned = tuple(e.lower().lstrip(".") for e in extensions if e.strip("."))
    if not cleaned:
        raise ValueError(f"extensions={list(extensions)} names no file extension; e.g. ('jpg', 'png')")
    return cleaned


def scan_folder(
    root: str | os.PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS, exclude: Sequence[str] = ()
) -> Scan:
    """Every image file under `root` (recursive; symlinked folders are not followed, a symlinked file only when it
    resolves inside `root`), sorted by key. `exclude` lists folders to leave out (the index itself, if inside)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    wanted, skip = _extensions(extensions), {os.path.realpath(p) for p in exclude}
    scan = Scan([])
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(folder, d)) not in skip)
        for name in files:
            if name.rsplit(".", 1)[-1].lower() not in wanted or "." not in name:
                continue
            path = os.path.join(folder, name)
            key = Path(os.path.relpath(path, root)).as_posix()
            if not inside(path, root):
                scan.refused.append((key, f"a symlink to {os.path.realpath(path)}, outside {root}"))
                continue
            try:
                stat = os.stat(path)
            except OSError as err:
                scan.refused.append((key, f"cannot stat: {err}"))
                continue
            scan.items.append(SourceItem(key, os.path.abspath(path), stat.st_size, stat.st_mtime))
    scan.items.sort(key=lambda item: item.key)
    return scan


def _csv_delimiter(path: Path, separator: str | None) -> str:
    if separator is not None:
        return separator
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def scan_csv(
    path: str | os.PathLike,
    *,
    img_key: str = "filepath",
    caption_key: str | None = "title",
    separator: str | None = None,
    root: str | os.PathLike | None = None,
) -> Scan:
    """The images a CSV/TSV names in its `img_key` column (open_clip's --csv-img-key), relative to the file's folder
    unless absolute; captions from `caption_key`. Images outside `root` (default: the CSV's folder) are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file {path} does not exist")
    root = Path(root) if root is not None else path.parent
    scan = Scan([])
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=_csv_delimiter(path, separator))
        columns = reader.fieldnames or []
        if img_key not in columns:
            raise ValueError(f"{path} has no column {img_key!r} (columns: {columns}); name it with --csv-img-key")
        if caption_key and caption_key not in columns:
            log.info("%s has no caption column %r; indexing without captions", path, caption_key)
            caption_key = None
        for row in reader:
            _add_csv_row(scan, row, img_key=img_key, caption_key=caption_key, base=path.parent, root=root)
    scan.items.sort(key=lambda item: item.key)
    return scan


def _add_csv_row(
    scan: Scan, row: dict[str, Any], *, img_key: str, caption_key: str | None, base: Path, root: Path
) -> None:
    value = (row.get(img_key) or "").strip()
    if not value:
        scan.refused.append((str(value), f"empty {img_key!r} cell"))
        return
    file = base / value
    if not inside(file, root):
        scan.refused.append((value, f"outside the root {root}"))
        return
    try:
        stat = os.stat(file)
    except OSError as err:
        scan.refused.append((value, f"cannot stat: {err.strerror or err}"))
        return
    key = Path(os.path.relpath(os.path.abspath(file), root)).as_posix()
    caption = (row.get(caption_key) or "") if caption_key else ""
    scan.items.append(SourceItem(key, os.path.abspath(file), stat.st_size, stat.st_mtime, caption))


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard paths from a brace pattern ("shards/{000..009}.tar"), a glob, or a list of them."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for pattern in patterns:
        for expanded in _braces(pattern):
            found = sorted(glob.glob(expanded)) if glob.has_magic(expanded) else [expanded]
            paths.extend(found)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing or not paths:
        raise FileNotFoundError(f"WebDataset shards not found: {missing[:5] or patterns}")
    return paths


def _braces(pattern: str) -> Iterator[str]:
    """Expand "{a,b}" and "{000..009}" (zero-padded ranges), as braceexpand does for WebDataset URLs."""
    start = pattern.find("{")
    end = pattern.find("}", start)
    if start < 0 or end < 0:
        yield pattern
        return
    body, head, tail = pattern[start + 1 : end], pattern[:start], pattern[end + 1 :]
    if ".." in body and "," not in body:
        low, high = body.split("..", 1)
        width = len(low) if low.startswith("0") else 0
        choices = [str(i).zfill(width) for i in range(int(low), int(high) + 1)]
    else:
        choices = body.split(",")
    for choice in choices:
        yield from _braces(head + choice + tail)


def scan_shards(shards: str | Sequence[str], *, root: str | os.PathLike | None = None) -> Scan:
    """The images inside WebDataset tar shards: one item per sample with an image member, its caption from the
    sample's .txt member. Keys are "<shard path relative to root>/<member name>"; root defaults to the shards'
    common folder."""
    paths = [os.path.abspath(p) for p in expand_shards(shards)]
    root = Path(root) if root is not None else Path(os.path.commonpath([os.path.dirname(p) for p in paths]))
    scan = Scan([])
    for shard in paths:
        if not inside(shard, root):
            scan.refused.append((shard, f"outside the root {root}"))
            continue
        try:
            scan.items.extend(_shard_items(shard, root))
        except (tarfile.TarError, OSError) as err:
            scan.refused.append((Path(os.path.relpath(shard, root)).as_posix(), f"unreadable shard: {err}"))
    scan.items.sort(key=lambda item: item.key)
    return scan


def _shard_items(shard: str, root: Path) -> list[SourceItem]:
    prefix = Path(os.path.relpath(shard, root)).as_posix()
    mtime = os.stat(shard).st_mtime
    images: dict[str, tarfile.TarInfo] = {}
    captions: dict[str, str] = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            if not member.isfile():
                continue
            sample, _, ext = member.name.partition(".")  # WebDataset: the key is the name up to its first dot
            ext = ext.lower()
            if ext in IMAGE_EXTENSIONS and sample not in images:
                images[sample] = member
            elif ext in CAPTION_EXTENSIONS:
                captions[sample] = tar.extractfile(member).read().decode("utf-8", "replace").strip()
    return [
        SourceItem(f"{prefix}/{m.name}", shard, m.size, mtime, captions.get(sample, ""), m.offset_data)
        for sample, m in images.items()
    ]


def locate(root: str | os.PathLike, key: str) -> tuple[str, str | None]:
    """(file, tar member or None) for an index key: a plain file under root, or a member of a shard under root."""
    parts = key.split("/")
    for cut in range(1, len(parts)):
        head = os.path.join(root, *parts[:cut])
        if head.endswith(".tar") and os.path.isfile(head):
            return head, "/".join(parts[cut:])
    return os.path.join(root, *parts), None
