"""Searching an index: the query's terms embedded with the index's own model (another model or preprocessing is
refused), combined into one vector, and ranked against the stored embeddings, exactly by matrix product or
approximately through faiss for large indexes; filters first, top-k with scores out."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ann
from .encoder import Encoder
from .loader import decode_image
from .model_spec import ModelSpec
from .query import Filters, Term, combine, parse_query
from .store import IndexStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Result:
    """One hit: the indexed path (relative to `root`), its cosine score and its metadata."""

    path: str
    score: float
    root: str
    width: int
    height: int
    size: int
    mtime: float
    caption: str
    row: int

    @property
    def file(self) -> str:
        """The path on disk (for shard members: "<shard.tar>/<member>")."""
        return os.path.join(self.root, *self.path.split("/"))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["score"] = round(self.score, 6)
        return out


class SearchIndex:
    """An index opened for queries. The model is the one the index records, unless `encoder` or `model` is given,
    which must then be that same model with the same preprocessing (or a `ModelMismatchError` names both).
    `approximate`: "auto" uses the faiss index when the indexer built one; False always searches exactly."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        encoder: Encoder | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        device: str = "cpu",
        approximate: bool | str = "auto",
    ) -> None:
        self.store = IndexStore(path)
        self.manifest = self.store.read_manifest()
        self.spec = ModelSpec.from_dict(self.manifest["model"], source=str(self.store.manifest_path))
        self.entries = self.store.load(self.manifest)
        self.root = self.manifest["source"]["root"]
        self.row_of = {key: row for row, key in enumerate(self.entries.paths)}
        if not self.manifest.get("complete", False):
            log.warning("index %s is incomplete (an indexing run was interrupted); re-run `index` to finish it", path)
        if encoder is None and model is not None:
            encoder = Encoder.load(model, pretrained=pretrained, device=device)
        if encoder is not None:
            self.spec.check_same(encoder.spec, index=str(path))
        self._encoder, self._device = encoder, device
        self._ann = self._open_ann(approximate)

    def __len__(self) -> int:
        return len(self.entries)

    def _open_ann(self, approximate: bool | str) -> ann.FaissSearcher | None:
        info = self.manifest.get("ann")
        if approximate is False or not info:
            return None
        if not ann.faiss_available():
            log.warning("the index has a faiss index but faiss is not installed; searching exactly")
            return None
        return ann.FaissSearcher(self.store.path / ann.ANN_FILE, nprobe=info["nprobe"], rows=len(self.entries))

    @property
    def encoder(self) -> Encoder:
        """The index's model, loaded on first use (a "more like this" query needs none); its weights must still be
        the ones the index was built with."""
        if self._encoder is None:
            encoder = Encoder.from_spec(self.spec, device=self._device)
            self.spec.check_same(encoder.spec, index=str(self.store.path))
            self._encoder = encoder
        return self._encoder

    def load_model(self) -> Encoder:
        """Load the index's model now (it is otherwise loaded by the first query that needs it)."""
        return self.encoder

    @property
    def approximate(self) -> bool:
        return self._ann is not None

    def term_vectors(self, terms: Sequence[Term], *, lang: str | None = None) -> np.ndarray:
        """(terms, dim) unit vectors: texts through the text tower, images through the image tower, "like" terms
        from the index itself."""
        vectors = np.zeros((len(terms), self.manifest["dim"]), dtype=np.float32)
        texts = [i for i, t in enumerate(terms) if t.kind == "text"]
        if texts:
            vectors[texts] = self.encoder.encode_texts([terms[i].value for i in texts], lang=lang)
        images = [i for i, t in enumerate(terms) if t.kind == "image"]
        if images:
            vectors[images] = self.encoder.encode_pil([_read_query_image(terms[i].value) for i in images])
        for i, term in enumerate(terms):
            if term.kind == "like":
                vectors[i] = self.entries.embeddings[self._row(term.value)]
        return vectors

    def _row(self, key: str) -> int:
        if key not in self.row_of:
            raise KeyError(f"{key!r} is not in the index {self.store.path}")
        return self.row_of[key]

    def query_vector(
        self, query: str | Sequence[Term], *, lang: str | None = None, image: str | None = None
    ) -> np.ndarray:
        """The unit query vector of an expression (see `parse_query`) or terms, plus an optional image file."""
        terms = parse_query(query) if isinstance(query, str) else list(query)
        if image is not None:
            terms.append(Term("image", os.fspath(image)))
        return combine(self.term_vectors(terms, lang=lang), [t.weight for t in terms])

    def search(
        self,
        query: str | Sequence[Term] | np.ndarray = "",
        *,
        k: int = 10,
        lang: str | None = None,
        image: str | os.PathLike | None = None,
        like: str | None = None,
        filters: Filters | None = None,
    ) -> list[Result]:
        """The top `k` rows for a query: an expression (`"cat" + photo.jpg - "fruit"`), terms, or a vector; `image`
        adds an image file, `like` an indexed path ("more like this", the path itself left out of the results)."""
        if k < 1:
            raise ValueError(f"k={k} must be at least 1")
        if isinstance(query, np.ndarray):
            vector = query.astype(np.float32)
        else:
            terms = parse_query(query) if isinstance(query, str) and query.strip() else list(query or [])
            terms += [Term("image", os.fspath(image))] if image is not None else []
            terms += [Term("like", like)] if like else []
            if not terms:
                raise ValueError("the query is empty: give a text (any language), an image file, or both")
            vector = combine(self.term_vectors(terms, lang=lang), [t.weight for t in terms])
        exclude = {self._row(like)} if like else set()
        return self.rank(vector, k=k, filters=filters, exclude=exclude)

    def rank(
        self, vector: np.ndarray, *, k: int, filters: Filters | None = None, exclude: set[int] = frozenset()
    ) -> list[Result]:
        """Top-k rows for a unit vector: faiss when there is an index for it and no filter, else exact."""
        if self._ann is not None and not filters:
            scores, ids = self._ann.search(vector, k + len(exclude))
        else:
            scores, ids = self._exact(vector, k + len(exclude), filters)
        hits = [(float(s), int(i)) for s, i in zip(scores, ids) if int(i) not in exclude]
        return [self._result(row, score) for score, row in hits[:k]]

    def _exact(self, vector: np.ndarray, k: int, filters: Filters | None) -> tuple[np.ndarray, np.ndarray]:
        scores = self.entries.embeddings @ vector  # (rows,)
        candidates = np.flatnonzero(filters.mask(self.entries.columns)) if filters else np.arange(len(scores))
        if len(candidates) == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        sub = scores[candidates]
        k = min(k, len(sub))
        top = np.argpartition(-sub, k - 1)[:k]
        top = top[np.argsort(-sub[top], kind="stable")]
        return sub[top], candidates[top]

    def _result(self, row: int, score: float) -> Result:
        fields = {c: self.entries.columns[c][row] for c in ("width", "height", "size", "mtime")}
        caption = self.entries.columns["caption"][row] or ""
        return Result(self.entries.paths[row], score, self.root, caption=caption, row=row, **fields)

    def info(self) -> dict[str, Any]:
        """What the index holds, for `--json` and the web page."""
        return {
            "index": str(self.store.path),
            "root": self.root,
            "count": len(self.entries),
            "model": self.spec.to_dict(),
            "dtype": self.manifest["dtype"],
            "ann": self.manifest.get("ann"),
            "complete": self.manifest.get("complete", False),
            "last_run": self.manifest.get("last_run"),
        }


def _read_query_image(path: str) -> Any:
    """A query image file, decoded; an unreadable one names itself."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"query image {path} does not exist")
    return decode_image(file.read_bytes(), name=str(path))


def timed_search(index: SearchIndex, **kwargs: Any) -> tuple[list[Result], float]:
    """(results, milliseconds), for the CLI and the web page."""
    start = time.perf_counter()
    results = index.search(**kwargs)
    return results, (time.perf_counter() - start) * 1000
