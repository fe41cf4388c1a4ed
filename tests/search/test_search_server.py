"""The search web server over real photos: the JSON API, cached thumbnails, and refusals of every path outside the
indexed root (../, absolute, URL-encoded, symlinks out of the root), sent as raw requests to a real uvicorn."""

from __future__ import annotations

import io
import json
import os
import urllib.parse

import pytest
from PIL import Image
from search_support import raw_get, running_server, write_photos

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from open_mclip.search import Encoder, SearchIndex, build_index  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory, photos, tiny_model_dir, free_port):
    """(root folder, port) of a running server over the photos in root/photos, with a secret file beside them and
    two symlinks out of the root: one there before indexing, one swapped in for an indexed photo afterwards."""
    root = tmp_path_factory.mktemp("served")
    folder = root / "photos"
    write_photos(folder, photos)
    secret = root / "secret.jpg"
    photos[0].convert("RGB").save(secret)
    (folder / "link-out.jpg").symlink_to(secret)
    (folder / "dir-out").symlink_to(root, target_is_directory=True)
    encoder = Encoder.load(tiny_model_dir)
    stats = build_index(folder, root / "idx", encoder=encoder, progress=False)
    assert [key for key, _ in stats.refused] == ["link-out.jpg"], "a symlink out of the root is never indexed"
    assert stats.total == len(photos)  # dir-out/ is not followed
    swapped = folder / "b" / "photo1.jpg"
    swapped.unlink()
    swapped.symlink_to(secret)  # after indexing: the index still lists b/photo1.jpg
    index = SearchIndex(root / "idx", encoder=encoder)
    port = free_port()
    with running_server(index, port):
        yield root, port


def test_api_search_returns_scored_results_with_thumbnails(served):
    root, port = served
    status, body, kind = raw_get(port, "/api/search?" + urllib.parse.urlencode({"q": "चाय का कप", "k": 3}))
    assert status == 200 and kind.startswith("application/json")
    results = json.loads(body)["results"]
    assert len(results) == 3 and results[0]["score"] >= results[2]["score"]
    assert all(r["thumb"] == f"/thumb/{r['path']}" for r in results)
    status, body, _ = raw_get(port, "/api/search?q=x&k=0")
    assert status == 400 and "k=0" in json.loads(body)["detail"]
    status, body, _ = raw_get(port, "/api/search?q=x&min_width=wide")
    assert status == 400 and "min_width" in json.loads(body)["detail"]
    status, body, _ = raw_get(port, "/")
    assert status == 200 and b'id="q"' in body


def test_thumbnails_are_made_once_and_cached(served):
    root, port = served
    status, body, kind = raw_get(port, "/thumb/a/photo0.jpg")
    assert status == 200 and kind == "image/jpeg"
    thumb = Image.open(io.BytesIO(body))
    assert max(thumb.size) == 256 and thumb.size[0] == thumb.size[1]  # the astronaut is square
    cached = list((root / "idx" / "thumbs").glob("*.jpg"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert raw_get(port, "/thumb/a/photo0.jpg")[1] == body
    assert cached[0].stat().st_mtime_ns == stamp, "the second request is served from the cache"
    status, body, kind = raw_get(port, "/file/a/photo2.jpg")
    assert status == 200 and kind == "image/jpeg" and body == (root / "photos" / "a" / "photo2.jpg").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/file/../secret.jpg",
        "/file/a/../../secret.jpg",
        "/thumb/../secret.jpg",
        "/file/%2e%2e/secret.jpg",
        "/file/..%2fsecret.jpg",
        "/file/a%2f..%2f..%2fsecret.jpg",
        "/file/%252e%252e/secret.jpg",
        "/file//etc/passwd",
        "/file/" + urllib.parse.quote("/etc/passwd", safe=""),
        "/thumb//etc/passwd",
        "/file/link-out.jpg",  # a symlink out of the root, refused by the indexer
        "/file/dir-out/secret.jpg",  # a symlinked folder out of the root, never walked
        "/file/a/./photo0.jpg",
        "/file/a\\photo0.jpg",
    ],
)
def test_nothing_outside_the_indexed_images_is_served(served, path):
    root, port = served
    status, body, _ = raw_get(port, path)
    assert status in (400, 404), (path, status)
    assert body != (root / "secret.jpg").read_bytes()


def test_a_symlink_swapped_in_after_indexing_is_refused(served):
    root, port = served
    assert os.path.islink(root / "photos" / "b" / "photo1.jpg")
    for path in ("/file/b/photo1.jpg", "/thumb/b/photo1.jpg"):
        status, body, _ = raw_get(port, path)
        assert status == 403 and b"outside the indexed root" in body, path
