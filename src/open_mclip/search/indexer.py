"""Building and updating an index: scan the source, embed only what is new or changed (a file whose content hash is
already known, renamed or touched, reuses its vector), commit in chunks so that a killed run resumes where it
stopped, then drop the rows of deleted and superseded files."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .encoder import Encoder
from .loader import ImageRows, collate_rows
from .model_spec import ModelSpec
from .sources import IMAGE_EXTENSIONS, Scan, SourceItem, scan_csv, scan_folder, scan_shards
from .store import COLUMNS, DTYPES, FORMAT, Entries, IndexStore

log = logging.getLogger(__name__)


@dataclasses.dataclass
class IndexStats:
    """What one `build_index` run did. `embedded` counts images that went through the model."""

    scanned: int = 0
    unchanged: int = 0
    embedded: int = 0
    reused: int = 0
    deleted: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (key, reason): unreadable images
    refused: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (key, reason): not indexable
    chunks_written: int = 0
    total: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "images_per_s": round(self.images_per_s, 1)}

    def summary(self) -> str:
        return (
            f"{self.total} images indexed: {self.embedded} embedded ({self.images_per_s:.0f} images/s), "
            f"{self.reused} reused by content hash, {self.unchanged} unchanged, {self.deleted} dropped, "
            f"{len(self.skipped)} unreadable skipped, {len(self.refused)} refused, in {self.seconds:.1f} s"
        )


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """How to list the images: kind "folder" | "csv" | "wds", the path(s), and the kind's options."""

    kind: str
    path: str | list[str]
    root: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def detect(cls, source: str | os.PathLike | Sequence[str], **options: Any) -> SourceConfig:
        """A folder, a .csv/.tsv file, or .tar shards (a brace pattern, a glob or a list)."""
        if not isinstance(source, (str, os.PathLike)):
            return cls("wds", [os.path.abspath(s) for s in source], options.pop("root", "") or "", options)
        text = os.fspath(source)
        if text.endswith(".tar") or ("{" in text and ".tar" in text):
            return cls("wds", os.path.abspath(text), options.pop("root", "") or "", options)
        if os.path.isdir(text):
            options.setdefault("extensions", list(IMAGE_EXTENSIONS))
            return cls("folder", os.path.abspath(text), os.path.abspath(text), options)
        if text.lower().endswith((".csv", ".tsv", ".tab")):
            root = options.pop("root", None) or os.path.dirname(os.path.abspath(text))
            return cls("csv", os.path.abspath(text), os.path.abspath(root), options)
        raise FileNotFoundError(f"image source {text} is not a folder, a .csv/.tsv file or .tar shards")

    def scan(self, *, exclude: Sequence[str] = ()) -> tuple[Scan, str]:
        """(the listing, the root the keys are relative to)."""
        if self.kind == "folder":
            return scan_folder(self.path, extensions=self.options["extensions"], exclude=exclude), self.root
        if self.kind == "csv":
            return scan_csv(self.path, root=self.root, **self.options), self.root
        scan = scan_shards(self.path, root=self.root or None)
        root = self.root or os.path.commonpath([os.path.dirname(item.file) for item in scan.items] or ["/"])
        return scan, root

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _new_manifest(spec: ModelSpec, source: SourceConfig, *, dtype: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": spec.to_dict(),
        "source": source.to_dict(),
        "dtype": dtype,
        "dim": spec.embed_dim,
        "chunks": [],
        "next_chunk": 0,
        "count": 0,
        "complete": False,
        "ann": None,
    }


@dataclasses.dataclass
class _Plan:
    todo: list[SourceItem]
    unchanged: int
    known: dict[str, int]  # content hash -> row of the existing entries, for reuse without the model
    previous: set[str]  # keys in the index before this run


def _plan(items: Sequence[SourceItem], existing: Entries) -> _Plan:
    """Which items need embedding: new keys and keys whose size or mtime changed."""
    columns = existing.columns
    state = {key: (size, mtime) for key, size, mtime in zip(columns["image_path"], columns["size"], columns["mtime"])}
    todo = [item for item in items if state.get(item.key) != (item.size, item.mtime)]
    known = {sha: row for row, sha in enumerate(columns["sha256"]) if sha}
    return _Plan(todo, len(items) - len(todo), known, set(state))


class _ChunkWriter:
    """Buffers embedded rows and commits them to the store `chunk_size` at a time (chunk files, then manifest)."""

    def __init__(self, store: IndexStore, manifest: dict[str, Any], *, chunk_size: int, stats: IndexStats) -> None:
        self.store, self.manifest, self.chunk_size, self.stats = store, manifest, chunk_size, stats
        self.vectors: list[np.ndarray] = []
        self.columns: dict[str, list] = {c: [] for c in COLUMNS}

    def add(self, vector: np.ndarray, row: dict[str, Any]) -> None:
        self.vectors.append(vector)
        for c in COLUMNS:
            self.columns[c].append(row[c])
        if len(self.vectors) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self.vectors:
            return
        name = f"{self.manifest['next_chunk']:06d}"
        rows = self.store.write_chunk(name, np.stack(self.vectors), self.columns, dtype=self.manifest["dtype"])
        self.manifest["chunks"].append({"name": name, "rows": rows})
        self.manifest["next_chunk"] += 1
        self.manifest["complete"] = False
        self.store.write_manifest(self.manifest)  # from here on the chunk is part of the index
        self.stats.chunks_written += 1
        self.vectors, self.columns = [], {c: [] for c in COLUMNS}


def _batches(
    todo: Sequence[SourceItem], encoder: Encoder, plan: _Plan, *, batch_size: int, workers: int
) -> Iterator[dict[str, Any]]:
    dataset = ImageRows(todo, encoder.preprocess, known_hashes=frozenset(plan.known))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_rows, shuffle=False
    )
    start = 0
    for batch in loader:
        batch["items"] = todo[start : start + len(batch["rows"])]
        start += len(batch["rows"])
        yield batch


def _embed(
    todo: Sequence[SourceItem],
    encoder: Encoder,
    plan: _Plan,
    existing: Entries,
    writer: _ChunkWriter,
    *,
    batch_size: int,
    workers: int,
    progress: bool,
) -> list[str]:
    """Embed (or reuse) every item of `todo` into `writer`; returns the keys that failed."""
    stats, failed = writer.stats, []
    start, last_log = time.perf_counter(), time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", desc="indexing", disable=not progress, mininterval=1.0, smoothing=0.1)
    for batch in _batches(todo, encoder, plan, batch_size=batch_size, workers=workers):
        vectors = encoder.encode_images(batch["images"]) if batch["images"] is not None else None
        stats.embedded += len(batch["decoded"])
        where = {position: n for n, position in enumerate(batch["decoded"])}
        for position, (item, row) in enumerate(zip(batch["items"], batch["rows"])):
            if row["error"]:
                stats.skipped.append((item.key, row["error"]))
                failed.append(item.key)
                log.warning("skipping %s: %s", item.key, row["error"])
                continue
            if row["known"]:
                old = plan.known[row["sha256"]]
                vector, row["width"], row["height"] = existing.embeddings[old], *_size_of(existing, old)
                stats.reused += 1
            else:
                vector = vectors[where[position]]
            writer.add(
                vector, {**row, "image_path": item.key, "size": item.size, "mtime": item.mtime, "caption": item.caption}
            )
        bar.update(len(batch["rows"]))
        stats.embed_seconds = time.perf_counter() - start
        if time.perf_counter() - last_log > 30 and not progress:
            last_log = time.perf_counter()
            _log_rate(stats, done=bar.n, total=len(todo))
    writer.flush()
    bar.close()
    stats.embed_seconds = time.perf_counter() - start
    return failed


def _size_of(entries: Entries, row: int) -> tuple[int, int]:
    return entries.columns["width"][row], entries.columns["height"][row]


def _log_rate(stats: IndexStats, *, done: int, total: int) -> None:
    rate = done / stats.embed_seconds if stats.embed_seconds else 0.0
    left = (total - done) / rate if rate else float("inf")
    log.info("indexed %d/%d images, %.0f images/s, %.0f s left", done, total, rate, left)


def compact(store: IndexStore, manifest: dict[str, Any], *, keep: set[str]) -> int:
    """Rewrite the chunks holding rows that are not the last row of a key in `keep` (deleted, superseded or now
    unreadable files); returns how many rows were dropped. The manifest switches to the new chunks at once."""
    metas = [store.read_chunk(chunk, dim=manifest["dim"]) for chunk in manifest["chunks"]]
    last = {}
    for c, (_, meta) in enumerate(metas):
        for r, key in enumerate(meta["image_path"]):
            last[key] = (c, r)
    chunks, dropped, old = [], 0, []
    for c, (chunk, (embeddings, meta)) in enumerate(zip(manifest["chunks"], metas)):
        live = [r for r, key in enumerate(meta["image_path"]) if key in keep and last[key] == (c, r)]
        if len(live) == chunk["rows"]:
            chunks.append(chunk)
            continue
        dropped += chunk["rows"] - len(live)
        old.append(chunk)
        if live:
            name = f"{manifest['next_chunk']:06d}"
            manifest["next_chunk"] += 1
            columns = {k: [meta[k][r] for r in live] for k in COLUMNS}
            store.write_chunk(name, np.asarray(embeddings[live]), columns, dtype=manifest["dtype"])
            chunks.append({"name": name, "rows": len(live)})
    manifest["chunks"] = chunks
    if dropped:
        store.write_manifest(manifest)
        for chunk in old:
            for path in store.chunk_files(chunk["name"]):
                path.unlink(missing_ok=True)
    return dropped


ANN_THRESHOLD = 100_000  # rows from which `index` also builds a faiss index (exact search stays a few ms below)


def _resolve_encoder(
    manifest: dict[str, Any] | None,
    *,
    model: str | None,
    pretrained: str | None,
    encoder: Encoder | None,
    device: str,
    index: str,
) -> Encoder:
    """The encoder given, the one named, or (re-running on an existing index) the one the index records."""
    if encoder is not None:
        return encoder
    if model is not None:
        return Encoder.load(model, pretrained=pretrained, device=device)
    if manifest is None:
        raise ValueError(f"index {index} does not exist yet: name the model with --model M [--pretrained P]")
    return Encoder.from_spec(ModelSpec.from_dict(manifest["model"], source=str(index)), device=device)


def _check_source(manifest: dict[str, Any], source: SourceConfig, *, index: str) -> None:
    recorded = manifest["source"]
    if (recorded["kind"], recorded["path"]) != (source.kind, source.path):
        raise ValueError(
            f"index {index} was built from {recorded['kind']} {recorded['path']}, not {source.kind} {source.path}; "
            "re-index that source, or give a new --index for this one"
        )


def build_index(
    source: str | os.PathLike | Sequence[str],
    index: str | os.PathLike,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    encoder: Encoder | None = None,
    dtype: str = "float16",
    batch_size: int = 64,
    chunk_size: int = 4096,
    workers: int = 0,
    device: str = "cpu",
    progress: bool = True,
    ann_threshold: int | None = ANN_THRESHOLD,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    csv_img_key: str = "filepath",
    csv_caption_key: str | None = "title",
    csv_separator: str | None = None,
    root: str | os.PathLike | None = None,
) -> IndexStats:
    """Index `source` (a folder, a CSV/TSV, or WebDataset shards) into the folder `index`, or bring an existing index
    up to date: only new and changed images are embedded, deleted ones dropped, and a killed run resumes at its last
    committed chunk. The model is `encoder`, or `model`/`pretrained`, or (on an existing index) the one it records.
    `ann_threshold`: from this many rows a faiss index is built too, if faiss is installed (None: never)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} must be one of {DTYPES}")
    if batch_size < 1 or chunk_size < 1 or workers < 0:
        raise ValueError(f"batch_size={batch_size}, chunk_size={chunk_size} must be >= 1 and workers={workers} >= 0")
    started, store = time.perf_counter(), IndexStore(index)
    source_cfg = _source_config(source, extensions, csv_img_key, csv_caption_key, csv_separator, root)
    with store.lock():
        manifest = store.read_manifest() if store.exists() else None
        enc = _resolve_encoder(
            manifest, model=model, pretrained=pretrained, encoder=encoder, device=device, index=str(index)
        )
        if manifest is None:
            manifest = _new_manifest(enc.spec, source_cfg, dtype=dtype)
        else:
            ModelSpec.from_dict(manifest["model"], source=str(store.manifest_path)).check_same(
                enc.spec, index=str(index)
            )
            _check_source(manifest, source_cfg, index=str(index))
        for path in store.remove_unlisted(manifest):
            log.info("removed %s, left by an interrupted run", path)
        stats = _update(
            store,
            manifest,
            enc,
            source_cfg,
            batch_size=batch_size,
            chunk_size=chunk_size,
            workers=workers,
            progress=progress,
        )
        _update_ann(store, manifest, threshold=ann_threshold)
        stats.seconds = time.perf_counter() - started
        manifest["last_run"] = {k: v for k, v in stats.to_dict().items() if k not in ("skipped", "refused")}
        manifest["skipped"] = [list(pair) for pair in stats.skipped]
        store.write_manifest(manifest)
    log.info("%s: %s", index, stats.summary())
    return stats


def _source_config(
    source: Any, extensions: Sequence[str], img_key: str, caption_key: str | None, separator: str | None, root: Any
) -> SourceConfig:
    probe = SourceConfig.detect(source, root=root)
    if probe.kind == "folder":
        return SourceConfig.detect(source, extensions=[e.lower().lstrip(".") for e in extensions])
    if probe.kind == "csv":
        return SourceConfig.detect(source, root=root, img_key=img_key, caption_key=caption_key, separator=separator)
    return probe


def _update(
    store: IndexStore,
    manifest: dict[str, Any],
    encoder: Encoder,
    source: SourceConfig,
    *,
    batch_size: int,
    chunk_size: int,
    workers: int,
    progress: bool,
) -> IndexStats:
    """Scan, embed what changed, compact; the manifest ends complete."""
    scan, root = source.scan(exclude=[str(store.path)])
    manifest["source"]["root"] = root
    stats = IndexStats(scanned=len(scan.items), refused=scan.refused)
    for key, reason in scan.refused:
        log.warning("not indexing %s: %s", key, reason)
    existing = store.load(manifest, dtype=manifest["dtype"])
    plan = _plan(scan.items, existing)
    stats.unchanged = plan.unchanged
    log.info("%d images in %s: %d unchanged, %d to embed", len(scan.items), source.path, plan.unchanged, len(plan.todo))
    writer = _ChunkWriter(store, manifest, chunk_size=chunk_size, stats=stats)
    failed = _embed(
        plan.todo, encoder, plan, existing, writer, batch_size=batch_size, workers=workers, progress=progress
    )
    keep = {item.key for item in scan.items} - set(failed)
    stats.deleted = len(plan.previous - keep)
    compact(store, manifest, keep=keep)
    manifest["count"] = sum(chunk["rows"] for chunk in manifest["chunks"])
    manifest["complete"] = True
    stats.total = manifest["count"]
    return stats


def _update_ann(store: IndexStore, manifest: dict[str, Any], *, threshold: int | None) -> None:
    """Build the faiss index when the index is large enough (and faiss installed); drop a stale one otherwise."""
    from . import ann

    ann_file = Path(store.path) / ann.ANN_FILE
    if threshold is None or manifest["count"] < threshold:
        ann_file.unlink(missing_ok=True)
        manifest["ann"] = None
        return
    if not ann.faiss_available():
        log.warning(
            "%d rows, but faiss is not installed: queries use exact search (pip install faiss-cpu)", manifest["count"]
        )
        manifest["ann"] = None
        return
    entries = store.load(manifest)
    manifest["ann"] = ann.build(entries.embeddings, ann_file)
    log.info(
        "faiss index %s: recall@10 %.3f against exact search",
        manifest["ann"]["factory"],
        manifest["ann"]["recall_at_10"],
    )
