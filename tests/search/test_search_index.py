"""open_mclip.search indexing: the format others can read, incremental updates counted in model calls, resuming
after SIGKILL, unreadable images, corrupt files and model mismatches, on real MNIST digits and real photos."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from search_support import CountingEncoder, png, write_digits, write_photos

from open_mclip.search import CorruptIndexError, Encoder, IndexStore, ModelMismatchError, SearchIndex, build_index
from open_mclip.search.store import COLUMNS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
QUIET = {"progress": False}


def _index_arrays(index: Path) -> tuple[np.ndarray, dict[str, list]]:
    entries = IndexStore(index).load()
    return entries.embeddings, entries.columns


@pytest.fixture
def encoder(tiny_model_dir):
    return Encoder.load(tiny_model_dir)


def test_index_format_is_readable_without_open_mclip(tmp_path, photos, encoder):
    folder = tmp_path / "photos"
    write_photos(folder, photos)
    (folder / "notes.txt").write_text("not an image")  # not an image extension: never listed
    stats = build_index(folder, tmp_path / "idx", encoder=encoder, **QUIET)
    assert stats.embedded == len(photos) and stats.total == len(photos)

    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["model"]["name"] == encoder.spec.name and manifest["model"]["embed_dim"] == 64
    assert len(manifest["model"]["weights_sha256"]) == 64 and manifest["model"]["preprocess"]["size"] == [32, 32]
    assert manifest["source"] == {**manifest["source"], "kind": "folder", "root": str(folder)}
    emb = np.load(tmp_path / "idx" / "img_emb" / "img_emb_000000.npy")  # plain NumPy, what autofaiss reads
    assert emb.dtype == np.float16 and emb.shape == (len(photos), 64)
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=2e-3)
    meta = pq.read_table(tmp_path / "idx" / "metadata" / "metadata_000000.parquet").to_pydict()
    assert sorted(meta) == sorted(COLUMNS)
    assert meta["image_path"] == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    first = folder / meta["image_path"][0]
    assert meta["size"][0] == first.stat().st_size and meta["mtime"][0] == first.stat().st_mtime
    assert (meta["width"][0], meta["height"][0]) == photos[0].size
    assert meta["sha256"][0] == hashlib.sha256(first.read_bytes()).hexdigest()


def test_unreadable_images_are_skipped_counted_and_named(tmp_path, photos, encoder):
    folder = tmp_path / "photos"
    write_photos(folder, photos[:3])
    good = (folder / "a" / "photo0.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "text.png").write_text("this is not a PNG")
    (folder / "empty.jpg").write_bytes(b"")
    stats = build_index(folder, tmp_path / "idx", encoder=encoder, **QUIET)
    skipped = dict(stats.skipped)
    assert sorted(skipped) == ["empty.jpg", "text.png", "truncated.jpg"]
    assert "empty" in skipped["empty.jpg"] and "text.png" in skipped["text.png"]
    assert stats.total == 3 and stats.embedded == 3
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert sorted(key for key, _ in manifest["skipped"]) == sorted(skipped)


def test_reindex_after_changing_100_files_embeds_only_those(tmp_path, mnist, encoder):
    images, labels = mnist["test"]
    folder = tmp_path / "digits"
    paths = write_digits(folder, images[:600], labels[:600])
    counter = CountingEncoder(encoder)
    build_index(folder, tmp_path / "idx", encoder=encoder, chunk_size=128, **QUIET)
    assert counter.images == 600

    counter.images = 0
    rng = np.random.default_rng(0)
    changed = rng.choice(len(paths), size=100, replace=False)
    for n, i in enumerate(changed):  # new content: another test digit, same name
        paths[i].write_bytes(png(images[1000 + n]))
        os.utime(paths[i], (1e9 + n, 1e9 + n))  # a distinct mtime even on a coarse-clock filesystem
    untouched = [i for i in range(len(paths)) if i not in set(changed)]
    for i in untouched[:20]:
        paths[i].unlink()  # deleted
    for i in untouched[20:30]:
        os.utime(paths[i], (2e9, 2e9))  # touched only: same content, new mtime
    stats = build_index(folder, tmp_path / "idx", encoder=encoder, chunk_size=128, **QUIET)
    assert counter.images == 100, "only the 100 changed files go through the model"
    assert (stats.embedded, stats.reused, stats.deleted, stats.total) == (100, 10, 20, 580)

    fresh = tmp_path / "fresh"
    build_index(folder, fresh, encoder=encoder, chunk_size=128, **QUIET)
    got, want = _index_arrays(tmp_path / "idx"), _index_arrays(fresh)
    order = np.argsort(got[1]["image_path"])
    assert [got[1]["image_path"][i] for i in order] == want[1]["image_path"]
    np.testing.assert_array_equal(got[0][order], want[0])  # the updated index is the index of today's folder
    for column in ("sha256", "mtime", "size"):
        assert [got[1][column][i] for i in order] == want[1][column]


@pytest.mark.slow  # a killed and a resumed indexing program: 5 s
def test_sigkill_half_way_resumes_without_redoing_finished_chunks(tmp_path, mnist, tiny_model_dir):
    images, labels = mnist["test"]
    folder = tmp_path / "digits"
    write_digits(folder, images[:320], labels[:320])
    args = ["index", str(folder), "--index", str(tmp_path / "idx"), "--model", tiny_model_dir]
    args += ["--chunk-size", "64", "--batch-size", "32", "--workers", "0", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    killed = subprocess.run(
        [sys.executable, str(HERE / "kill_during_index.py"), "3", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert [c["rows"] for c in manifest["chunks"]] == [64, 64] and not manifest["complete"]
    assert list((tmp_path / "idx" / "img_emb").glob("*.tmp*")), "the kill left half a chunk behind"

    encoder = Encoder.load(tiny_model_dir)
    counter = CountingEncoder(encoder)
    stats = build_index(folder, tmp_path / "idx", encoder=encoder, chunk_size=64, batch_size=32, **QUIET)
    assert counter.images == 320 - 128, "the two finished chunks are not embedded again"
    assert stats.unchanged == 128 and stats.total == 320
    assert not list((tmp_path / "idx" / "img_emb").glob("*.tmp*")), "the half-written chunk is cleaned up"

    single = tmp_path / "single"
    build_index(folder, single, encoder=Encoder.load(tiny_model_dir), chunk_size=64, batch_size=32, **QUIET)
    got, want = _index_arrays(tmp_path / "idx"), _index_arrays(single)
    assert got[1] == want[1]
    np.testing.assert_array_equal(got[0], want[0])
    chunks = lambda p: [(c["name"], c["rows"]) for c in json.loads((p / "index.json").read_text())["chunks"]]  # noqa: E731
    assert chunks(tmp_path / "idx") == chunks(single)


def test_corrupt_index_files_name_themselves(tmp_path, photos, encoder):
    folder = tmp_path / "photos"
    write_photos(folder, photos[:2])
    index = tmp_path / "idx"
    build_index(folder, index, encoder=encoder, **QUIET)
    npy = index / "img_emb" / "img_emb_000000.npy"
    npy.write_bytes(npy.read_bytes()[:100])
    with pytest.raises(CorruptIndexError, match="img_emb_000000.npy"):
        SearchIndex(index, encoder=encoder)
    (index / "index.json").write_text('{"format": "open_mclip.search/1", "chunks": [')
    with pytest.raises(CorruptIndexError, match=r"index\.json is corrupt"):
        SearchIndex(index, encoder=encoder)
    with pytest.raises(FileNotFoundError, match="no index at .*python -m open_mclip.search index"):
        SearchIndex(tmp_path / "nowhere")


def test_another_model_or_preprocessing_is_refused_naming_both(tmp_path, photos, encoder, other_model_dir):
    folder = tmp_path / "photos"
    write_photos(folder, photos[:2])
    build_index(folder, tmp_path / "idx", encoder=encoder, **QUIET)
    other = Encoder.load(other_model_dir)
    with pytest.raises(ModelMismatchError) as err:
        SearchIndex(tmp_path / "idx", encoder=other)
    assert encoder.spec.name in str(err.value) and other.spec.name in str(err.value)
    with pytest.raises(ModelMismatchError, match="was built with model"):
        build_index(folder, tmp_path / "idx", encoder=other, **QUIET)  # nor can it be updated with another

    from open_mclip import image_transform

    cfg = encoder.model.preprocess_cfg.merged(interpolation="bilinear")
    spec = type(encoder.spec)(**{**encoder.spec.to_dict(), "preprocess": cfg.to_dict()})
    bilinear = Encoder(encoder.model, encoder.tokenizer, image_transform(cfg, is_train=False), spec)
    with pytest.raises(ModelMismatchError, match="interpolation: index 'bicubic', query 'bilinear'"):
        SearchIndex(tmp_path / "idx", encoder=bilinear)


def test_random_weights_are_refused(tmp_path):
    with pytest.raises(ValueError, match="random weights.*--pretrained"):
        Encoder.load("mclip-tiny")


def test_csv_source_with_captions_refuses_paths_outside_its_root(tmp_path, photos, encoder):
    folder = tmp_path / "data"
    paths = write_photos(folder, photos[:3])
    outside = tmp_path / "elsewhere.jpg"
    photos[3].convert("RGB").save(outside)
    rows = [f"{p.relative_to(folder).as_posix()}\tphoto number {i}" for i, p in enumerate(paths)]
    rows += ["../elsewhere.jpg\tnot mine", "missing.jpg\tgone"]
    (folder / "train.tsv").write_text("filepath\ttitle\n" + "\n".join(rows) + "\n", encoding="utf-8")
    stats = build_index(folder / "train.tsv", tmp_path / "idx", encoder=encoder, **QUIET)
    assert stats.total == 3
    assert sorted(key for key, _ in stats.refused) == ["../elsewhere.jpg", "missing.jpg"]
    _, columns = _index_arrays(tmp_path / "idx")
    assert columns["caption"] == ["photo number 0", "photo number 2", "photo number 1"]  # sorted by path: a/, a/, b/


def test_webdataset_shards_are_indexed_member_by_member(tmp_path, mnist, encoder):
    images, labels = mnist["test"]
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    for s in range(2):
        with tarfile.open(shard_dir / f"shard-{s:02d}.tar", "w") as tar:
            for i in range(s * 5, s * 5 + 5):
                for name, payload in (
                    (f"{i:04d}.png", png(images[i])),
                    (f"{i:04d}.txt", f"digit {labels[i]}".encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    stats = build_index(str(shard_dir / "shard-{00..01}.tar"), tmp_path / "idx", encoder=encoder, **QUIET)
    assert stats.total == 10
    embeddings, columns = _index_arrays(tmp_path / "idx")
    assert columns["image_path"][:2] == ["shard-00.tar/0000.png", "shard-00.tar/0001.png"]
    assert columns["caption"][7] == f"digit {labels[7]}"
    # the stored vector is the model's embedding of that very member
    direct = encoder.encode_pil([Image.fromarray(images[7])])
    np.testing.assert_allclose(embeddings[7], direct[0], atol=2e-3)  # float16 storage


SEARCH_IMPORT = re.compile(
    r"^\s*(?:from|import)\s+(?:open_mclip\.search|\.search)\b|^\s*from\s+(?:open_mclip|\.)\s+import\s+.*\bsearch\b",
    re.M,
)


def test_the_library_never_imports_search_and_search_imports_no_extras():
    assert SEARCH_IMPORT.search("from .search import build_index") and SEARCH_IMPORT.search("from . import search")
    assert not SEARCH_IMPORT.search("from .searching import x")
    src = REPO / "src" / "open_mclip"
    core = [p for p in src.rglob("*.py") if "search" not in p.relative_to(src).parts]
    offenders = [str(p.relative_to(src)) for p in core if SEARCH_IMPORT.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"the library core imports open_mclip.search: {offenders}"
    code = (
        "import sys, open_mclip, open_mclip.search, open_mclip.search.cli;"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'faiss', 'pyarrow', 'torchvision') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
