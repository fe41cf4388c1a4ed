"""Measure open_mclip.search on this machine: indexing speed, re-indexing after 1% of the files change, query
latency (exact and faiss) at 10k and 100k vectors with the faiss recall, and memory. Writes JSON and prints Markdown.

    python -m bench.search --out bench/results/search-cpu-epyc-2core.json [--work /tmp/search-bench]

Images: the 10,000 real MNIST test digits as PNG files, indexed with mclip-mnist (the demo's architecture), and
real photos (scikit-image, scikit-learn) cut into 640x480 JPEGs, indexed with ViT-B-32 at 224 px. Weights are random
(saved once as a local-dir folder): the speed of a model does not depend on its weights. The latency cases use
random unit vectors of ViT-B-32's width (512), which is the worst case for faiss's recall (no clusters).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import open_mclip
from bench.harness import machine
from open_mclip.search import SearchIndex, build_index
from open_mclip.search.indexer import SourceConfig, _new_manifest
from open_mclip.search.store import IndexStore

REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _model_dir(work: Path, name: str) -> str:
    folder = work / f"model-{name}"
    if not (folder / "open_clip_config.json").is_file():
        torch.manual_seed(0)
        open_mclip.save_pretrained(open_mclip.create_model(name), folder)
    return f"local-dir:{folder}"


def _mnist_folder(work: Path) -> Path:
    sys.path.insert(0, str(REPO / "scripts"))
    import make_mnist_shards as shards

    folder = work / "mnist-test"
    if not (folder / "9").is_dir():
        images, labels = shards.load_mnist(shards.default_mnist_path())["test"]
        shards.write_image_folder(folder, images, labels)
    return folder


def _photo_folder(work: Path, count: int) -> Path:
    from skimage import data
    from sklearn.datasets import load_sample_images

    folder = work / f"photos-{count}"
    if folder.is_dir():
        return folder
    folder.mkdir(parents=True)
    arrays = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), *load_sample_images().images]
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = Image.fromarray(arrays[i % len(arrays)]).resize((960, 720))
        x, y = rng.integers(0, 320), rng.integers(0, 240)
        photo.crop((x, y, x + 640, y + 480)).save(folder / f"photo{i:05d}.jpg", quality=90)
    return folder


def bench_indexing(work: Path, *, workers: int) -> dict[str, Any]:
    """Index the 10,000 digits, re-index unchanged, change 100 (1%) and re-index, query with the model."""
    folder, model = _mnist_folder(work), _model_dir(work, "mclip-mnist")
    index = work / "mnist-index"
    if index.exists():
        shutil.rmtree(index)
    full = build_index(folder, index, model=model, workers=workers, batch_size=256, progress=False)
    unchanged = build_index(folder, index, model=model, workers=workers, batch_size=256, progress=False)
    files = sorted(folder.rglob("*.png"))
    rng = np.random.default_rng(0)
    for n, i in enumerate(rng.choice(len(files), size=100, replace=False)):
        Image.open(files[i]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(files[i])  # new content, same name
        os.utime(files[i], (1.5e9 + n, 1.5e9 + n))
    changed = build_index(folder, index, model=model, workers=workers, batch_size=256, progress=False)
    assert changed.embedded == 100, changed.summary()
    before = rss_mib()
    searcher = SearchIndex(index)
    searcher.search("seven", k=10)  # loads the model
    opened = rss_mib() - before
    latency = _latency(lambda: searcher.search("sept", k=10, lang="fr"))
    return {
        "images": full.total,
        "index_seconds": round(full.seconds, 2),
        "images_per_s": round(full.images_per_s, 1),
        "reindex_unchanged_seconds": round(unchanged.seconds, 2),
        "reindex_1pct_seconds": round(changed.seconds, 2),
        "reindex_1pct_embedded": changed.embedded,
        "text_query_ms": latency,
        "open_index_and_model_rss_mib": round(opened, 1),
        "index_disk_mib": round(sum(p.stat().st_size for p in index.rglob("*") if p.is_file()) / 2**20, 2),
    }


def bench_photo_indexing(work: Path, *, count: int, workers: int) -> dict[str, Any]:
    folder, model = _photo_folder(work, count), _model_dir(work, "ViT-B-32")
    index = work / "photo-index"
    if index.exists():
        shutil.rmtree(index)
    stats = build_index(folder, index, model=model, workers=workers, batch_size=32, progress=False)
    searcher = SearchIndex(index)
    searcher.search("a cat", k=10)
    return {
        "model": "ViT-B-32 (224 px)",
        "images": stats.total,
        "images_per_s": round(stats.images_per_s, 2),
        "index_seconds": round(stats.seconds, 1),
        "text_query_ms": _latency(lambda: searcher.search("एक बिल्ली", k=10)),
    }


def _latency(call: Any, *, repeats: int = 30) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {"median": round(float(np.median(times)), 3), "p90": round(float(np.percentile(times, 90)), 3)}


def _synthetic_index(work: Path, rows: int, dim: int, spec: Any) -> Path:
    """An index of `rows` random unit vectors (float16, as `index` stores them) with plain metadata."""
    path = work / f"synthetic-{rows}"
    store = IndexStore(path)
    if store.exists():
        return path
    rng = np.random.default_rng(rows)
    manifest = _new_manifest(spec, SourceConfig("folder", str(path), str(path), {}), dtype="float16")
    for start in range(0, rows, 4096):
        n = min(4096, rows - start)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        keys = [f"img/{start + i:07d}.jpg" for i in range(n)]
        columns = {"image_path": keys, "size": [1000] * n, "mtime": [1.6e9] * n, "sha256": [""] * n,
                   "width": [640] * n, "height": [480] * n, "caption": [""] * n}  # fmt: skip
        name = f"{manifest['next_chunk']:06d}"
        store.write_chunk(name, vectors, columns, dtype="float16")
        manifest["chunks"].append({"name": name, "rows": n})
        manifest["next_chunk"] += 1
    manifest.update(count=rows, complete=True)
    store.write_manifest(manifest)
    return path


def bench_latency(work: Path, *, rows: int, dim: int = 512) -> dict[str, Any]:
    """Exact and faiss ranking of one query vector over `rows` vectors; faiss build time and recall."""
    from open_mclip.search import ann
    from open_mclip.search.model_spec import ModelSpec

    spec = ModelSpec("synthetic", None, None, dim, {})
    path = _synthetic_index(work, rows, dim, spec)
    before = rss_mib()
    index = SearchIndex(path, approximate=False)
    opened = rss_mib() - before
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((30, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    it = iter(range(10**9))
    exact = _latency(lambda: index.rank(queries[next(it) % 30], k=10))
    start = time.perf_counter()
    info = ann.build(index.entries.embeddings, path / ann.ANN_FILE)
    build_seconds = time.perf_counter() - start
    faiss_index = ann.FaissSearcher(path / ann.ANN_FILE, nprobe=info["nprobe"], rows=rows)
    approx = _latency(lambda: faiss_index.search(queries[next(it) % 30], 10))
    return {
        "rows": rows,
        "dim": dim,
        "exact_ms": exact,
        "faiss_ms": approx,
        "faiss": info,
        "faiss_build_seconds": round(build_seconds, 2),
        "open_rss_mib": round(opened, 1),
        "embeddings_mib_float32": round(index.entries.embeddings.nbytes / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "search-latest.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/open_mclip-search-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--photos", type=int, default=300, help="640x480 JPEGs indexed with ViT-B-32")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine("cpu"), "command": " ".join(sys.argv)}
    results["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]  # other jobs on the 2 cores skew it
    results["mnist_10k"] = bench_indexing(args.work, workers=args.workers)
    print(json.dumps(results["mnist_10k"]), flush=True)
    results["photos_vit_b_32"] = bench_photo_indexing(args.work, count=args.photos, workers=args.workers)
    print(json.dumps(results["photos_vit_b_32"]), flush=True)
    results["latency"] = [bench_latency(args.work, rows=rows) for rows in (10_000, 100_000)]
    for row in results["latency"]:
        print(json.dumps(row), flush=True)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
