"""The on-disk index: a folder anyone can read without open_mclip.

    INDEX/index.json                     the manifest: format, model, source, chunk list, last run, approximate index
    INDEX/img_emb/img_emb_000000.npy     (rows, dim) float16 or float32, L2-normalised: clip-retrieval's layout,
                                         which autofaiss reads as it is (`autofaiss build_index --embeddings img_emb`)
    INDEX/metadata/metadata_000000.parquet  one row per embedding, same order: image_path (relative to the source
                                         root), size, mtime, sha256, width, height, caption
    INDEX/ann/faiss.index                optional approximate index (faiss), with its recall in the manifest
    INDEX/thumbs/                        thumbnails the web page made (a cache)

Every file is written under a temporary name, flushed and renamed; a chunk counts once the manifest that lists it
has been renamed into place, so a killed indexer leaves the index as of its last finished chunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "open_mclip.search/1"
MANIFEST = "index.json"
EMB_DIR, META_DIR, ANN_DIR, THUMB_DIR = "img_emb", "metadata", "ann", "thumbs"
COLUMNS = ("image_path", "size", "mtime", "sha256", "width", "height", "caption")
DTYPES = ("float16", "float32")


class CorruptIndexError(ValueError):
    """A file of an index cannot be read or disagrees with the manifest; the message names the file."""


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as err:
        raise ImportError("open_mclip.search stores metadata as Parquet: pip install 'open_mclip[search]'") from err
    return pyarrow, pyarrow.parquet


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(file)` on a temporary file beside `path`, flush it to disk and rename it to `path`."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclasses.dataclass
class Entries:
    """The live rows of an index in memory: embeddings (n, dim) and metadata columns of n values each."""

    embeddings: np.ndarray
    columns: dict[str, list]

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def paths(self) -> list[str]:
        return self.columns["image_path"]


class IndexStore:
    """Reads and writes one index folder; knows the file layout, nothing about models or images."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"IndexStore({str(self.path)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def chunk_files(self, name: str) -> tuple[Path, Path]:
        return self.path / EMB_DIR / f"img_emb_{name}.npy", self.path / META_DIR / f"metadata_{name}.parquet"

    # ------------------------------------------------------------------ manifest

    def read_manifest(self) -> dict[str, Any]:
        """The manifest; a missing one says how to build the index, a corrupt one names itself."""
        if not self.manifest_path.is_file():
            raise FileNotFoundError(
                f"no index at {self.path} ({MANIFEST} missing): build one with "
                f"`python -m open_mclip.search index DIR --model M --pretrained P --index {self.path}`"
            )
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CorruptIndexError(f"{self.manifest_path} is corrupt ({err}); rebuild the index") from err
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise CorruptIndexError(f"{self.manifest_path} is not an {FORMAT} manifest (format: {found!r})")
        for key in ("model", "source", "dtype", "chunks", "next_chunk"):
            if key not in manifest:
                raise CorruptIndexError(f"{self.manifest_path} has no {key!r} entry; rebuild the index")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
        atomic_write(self.manifest_path, lambda f: f.write(text.encode("utf-8")))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the index for writing; a second indexer on the same index is refused rather than interleaved."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                raise RuntimeError(f"index {self.path} is being written by another indexer; wait for it") from err
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ chunks

    def write_chunk(self, name: str, embeddings: np.ndarray, columns: dict[str, list], *, dtype: str) -> int:
        """Write one chunk's embeddings and metadata (not yet listed in the manifest); returns its row count."""
        pa, pq = _pyarrow()
        rows = len(embeddings)
        assert all(len(columns[c]) == rows for c in COLUMNS), "every metadata column has one value per embedding"
        emb_file, meta_file = self.chunk_files(name)
        emb_file.parent.mkdir(parents=True, exist_ok=True)
        meta_file.parent.mkdir(parents=True, exist_ok=True)
        array = np.ascontiguousarray(embeddings, dtype=dtype)
        atomic_write(emb_file, lambda f: np.save(f, array))
        table = pa.table({c: columns[c] for c in COLUMNS}, schema=_schema(pa))
        atomic_write(meta_file, lambda f: pq.write_table(table, f))
        return rows

    def read_chunk(self, chunk: dict[str, Any], *, dim: int, mmap: bool = True) -> tuple[np.ndarray, dict[str, list]]:
        """(embeddings, metadata columns) of one manifest chunk, checked against the manifest; errors name the file."""
        _, pq = _pyarrow()
        emb_file, meta_file = self.chunk_files(chunk["name"])
        try:
            embeddings = np.load(emb_file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise CorruptIndexError(f"{emb_file} is missing or corrupt ({err}); rebuild the index") from err
        if embeddings.shape != (chunk["rows"], dim):
            raise CorruptIndexError(
                f"{emb_file} holds {embeddings.shape}, the manifest says ({chunk['rows']}, {dim}); rebuild the index"
            )
        try:
            columns = pq.read_table(meta_file).to_pydict()
        except Exception as err:  # pyarrow raises its own error types for a damaged file
            raise CorruptIndexError(f"{meta_file} is missing or corrupt ({err}); rebuild the index") from err
        missing = [c for c in COLUMNS if c not in columns]
        if missing or any(len(columns[c]) != chunk["rows"] for c in COLUMNS):
            raise CorruptIndexError(f"{meta_file} lacks columns {missing} or rows; rebuild the index")
        return embeddings, columns

    def remove_unlisted(self, manifest: dict[str, Any]) -> list[Path]:
        """Delete chunk files and temporaries that the manifest does not list (left by a killed run); returns them."""
        listed = {p for chunk in manifest["chunks"] for p in self.chunk_files(chunk["name"])}
        removed = []
        for folder in (self.path / EMB_DIR, self.path / META_DIR):
            for path in folder.glob("*") if folder.is_dir() else ():
                if path not in listed:
                    path.unlink()
                    removed.append(path)
        for path in self.path.glob(f"{MANIFEST}.tmp*"):
            path.unlink()
            removed.append(path)
        return removed

    def load(self, manifest: dict[str, Any] | None = None, *, dtype: str = "float32") -> Entries:
        """Every live row: chunks in manifest order, a key that occurs twice keeps its last row (a run killed after
        re-embedding a changed file but before compaction leaves both)."""
        manifest = manifest or self.read_manifest()
        dim = manifest["dim"]
        parts, columns = [], {c: [] for c in COLUMNS}
        for chunk in manifest["chunks"]:
            embeddings, meta = self.read_chunk(chunk, dim=dim)
            parts.append(embeddings)
            for c in COLUMNS:
                columns[c].extend(meta[c])
        embeddings = np.concatenate(parts).astype(dtype) if parts else np.zeros((0, dim), dtype=dtype)
        last = {key: i for i, key in enumerate(columns["image_path"])}
        if len(last) < len(embeddings):
            keep = sorted(last.values())
            embeddings = embeddings[keep]
            columns = {c: [values[i] for i in keep] for c, values in columns.items()}
        return Entries(embeddings, columns)


def _schema(pa: Any) -> Any:
    return pa.schema(
        [
            ("image_path", pa.string()),
            ("size", pa.int64()),
            ("mtime", pa.float64()),
            ("sha256", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("caption", pa.string()),
        ]
    )
