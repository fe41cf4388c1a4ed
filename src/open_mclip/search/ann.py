"""The approximate index (faiss-cpu, an optional extra, imported only here and only when used): an inverted file
over the normalised embeddings, searched by inner product, with `nprobe` raised until recall@10 against exact
search reaches a target on held-out queries. The recall is recorded in the manifest and reported."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ANN_FILE = os.path.join("ann", "faiss.index")
TARGET_RECALL = 0.95


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:
        raise ImportError("the approximate index needs faiss: pip install 'open_mclip[faiss]' (faiss-cpu)") from err
    return faiss


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids (n_queries, k) of the k largest inner products, best first, by matrix product."""
    scores = queries @ embeddings.T  # (n_queries, rows)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-k that the approximate search found."""
    k = exact.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, exact)]))


def build(
    embeddings: np.ndarray,
    path: str | os.PathLike,
    *,
    target_recall: float = TARGET_RECALL,
    k: int = 10,
    num_queries: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Train and fill an IVF index over `embeddings` (n, dim) float32, tune nprobe, save it to `path`; returns the
    manifest entry (factory, nprobe, recall_at_10, rows)."""
    faiss = _faiss()
    data = np.ascontiguousarray(embeddings, dtype=np.float32)
    rows, dim = data.shape
    nlist = max(1, min(int(4 * math.sqrt(rows)), rows // 39))  # faiss wants >= 39 training points per list
    factory = f"IVF{nlist},Flat"
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(data)
    index.add(data)
    rng = np.random.default_rng(seed)
    queries = _held_out_queries(data, rng, num_queries)
    exact = exact_top_k(data, queries, k)
    nprobe, recall = 1, 0.0
    while True:
        index.nprobe = nprobe
        recall = recall_at_k(index.search(queries, k)[1], exact)
        if recall >= target_recall or nprobe >= nlist:
            break
        nprobe = min(nlist, nprobe * 2)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    faiss.write_index(index, tmp)
    os.replace(tmp, path)
    return {"kind": "faiss", "factory": factory, "nprobe": nprobe, "recall_at_10": round(recall, 4), "rows": rows}


def _held_out_queries(data: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Query vectors near the data but not on it: rows mixed with a random direction, renormalised."""
    picks = data[rng.choice(len(data), size=min(count, len(data)), replace=False)]
    noise = rng.standard_normal(picks.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    mixed = picks + 0.5 * noise
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)


class FaissSearcher:
    """A saved faiss index, searched with the manifest's nprobe."""

    def __init__(self, path: str | os.PathLike, *, nprobe: int, rows: int) -> None:
        faiss = _faiss()
        try:
            self.index = faiss.read_index(os.fspath(path))
        except RuntimeError as err:
            raise ValueError(f"{path} is not a readable faiss index ({err}); re-run `index` to rebuild it") from err
        if self.index.ntotal != rows:
            raise ValueError(
                f"{path} holds {self.index.ntotal} vectors, the index {rows}; re-run `index` to rebuild it"
            )
        self.index.nprobe = nprobe

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids) of the approximate top-k of one query vector; ids of -1 (too few found) are removed."""
        scores, ids = self.index.search(np.ascontiguousarray(query[None], dtype=np.float32), k)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]
