"""`serve`: a web page and a JSON API over an index, with FastAPI and uvicorn (the `search` extra, imported only
here). The page (static/search.html) sends queries to /api/search and shows thumbnails from /thumb/PATH, made once
and cached in the index folder; /file/PATH is the original image.

Only indexed images are ever served: a requested path must be a key of the index exactly (so "../", absolute and
URL-encoded paths never match one), and the file behind it, with every symlink resolved, must still lie inside the
indexed root. The server binds to 127.0.0.1 unless told otherwise.
"""

import hashlib
import io
import logging
import mimetypes
import tarfile
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from .loader import decode_image
from .query import Filters, parse_date
from .searcher import SearchIndex, timed_search
from .sources import inside, locate
from .store import THUMB_DIR, atomic_write

log = logging.getLogger(__name__)

THUMB_SIZE = 256
MAX_K = 200


class NotServed(Exception):
    """A request for a path that is not an indexed image inside the root (answered 404, or 403 for an escape)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError as err:
        raise ImportError("serve needs FastAPI and uvicorn: pip install 'open_mclip[search]'") from err
    return fastapi


def indexed_file(index: SearchIndex, path: str) -> tuple[str, str | None]:
    """(file, tar member or None) for a requested path, or NotServed: the path must be an index key exactly, and
    its file must resolve inside the indexed root (a symlink swapped in after indexing is refused)."""
    parts = path.split("/")
    if "\x00" in path or "\\" in path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise NotServed(404, f"{path!r} is not an indexed path")
    if path not in index.row_of:
        raise NotServed(404, f"{path!r} is not in the index")
    file, member = locate(index.root, path)
    if not inside(file, index.root):
        raise NotServed(403, f"{path!r} resolves outside the indexed root")
    return file, member


def read_indexed(index: SearchIndex, path: str) -> bytes:
    file, member = indexed_file(index, path)
    try:
        if member is None:
            return Path(file).read_bytes()
        with tarfile.open(file) as tar:
            return tar.extractfile(tar.getmember(member)).read()
    except (OSError, KeyError, tarfile.TarError) as err:
        raise NotServed(404, f"{path!r} is indexed but cannot be read now: {err}") from err


def thumbnail(index: SearchIndex, path: str) -> bytes:
    """A JPEG of at most THUMB_SIZE pixels a side, made on first request and cached under INDEX/thumbs/."""
    indexed_file(index, path)  # the checks first: a cached thumbnail is no way around them
    digest = index.entries.columns["sha256"][index.row_of[path]] or hashlib.sha256(path.encode()).hexdigest()
    cached = index.store.path / THUMB_DIR / f"{digest}-{THUMB_SIZE}.jpg"
    if cached.is_file():
        return cached.read_bytes()
    image = decode_image(read_indexed(index, path), name=path)
    image.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, lambda f: f.write(buffer.getvalue()))
    return buffer.getvalue()


def _filters(params: dict[str, Any]) -> Filters:
    def number(name: str) -> int | None:
        value = params.get(name)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError as err:
            raise ValueError(f"{name}={value!r} must be a whole number of pixels") from err

    return Filters(
        path_glob=params.get("glob") or None,
        modified_after=parse_date(params.get("after") or None, name="after"),
        modified_before=parse_date(params.get("before") or None, name="before"),
        min_width=number("min_width"),
        min_height=number("min_height"),
        max_width=number("max_width"),
        max_height=number("max_height"),
    )


def api_search(index: SearchIndex, params: dict[str, Any], *, lock: threading.Lock) -> dict[str, Any]:
    """The JSON answer to /api/search?q=...&k=...&lang=...&like=...&glob=...&after=...&min_width=..."""
    k = int(params.get("k") or 24)
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k={k} must be in 1..{MAX_K}")
    with lock:  # one query at a time: a language hint is tokenizer state
        results, ms = timed_search(
            index,
            query=params.get("q") or "",
            k=k,
            lang=params.get("lang") or None,
            like=params.get("like") or None,
            filters=_filters(params),
        )
    hits = [{**r.to_dict(), "thumb": f"/thumb/{r.path}", "url": f"/file/{r.path}"} for r in results]
    for hit in hits:
        hit.pop("root")
    return {"results": hits, "took_ms": round(ms, 2), "approximate": index.approximate and not _filters(params)}


def create_app(index: SearchIndex) -> Any:
    """The FastAPI application over an open index."""
    fastapi = _fastapi()
    from fastapi import Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    # (this module has no `from __future__ import annotations`: FastAPI reads the endpoints' annotations as objects)

    app = fastapi.FastAPI(title="open_mclip search", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    page = resources.files(__package__).joinpath("static", "search.html").read_text(encoding="utf-8")

    @app.exception_handler(NotServed)
    def _not_served(request: Any, err: NotServed) -> Any:
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return index.info()

    @app.get("/api/search")
    def search(request: Request) -> Any:
        try:
            return api_search(index, dict(request.query_params), lock=lock)
        except (ValueError, KeyError, FileNotFoundError) as err:
            return JSONResponse({"detail": str(err.args[0] if err.args else err)}, status_code=400)

    @app.get("/thumb/{path:path}")
    def thumb(path: str) -> Any:
        try:
            data = thumbnail(index, path)
        except ValueError as err:  # indexed, but no longer decodes
            raise NotServed(404, str(err)) from err
        return Response(data, media_type="image/jpeg", headers=_headers(cache=True))

    @app.get("/file/{path:path}")
    def original(path: str) -> Any:
        data = read_indexed(index, path)
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(data, media_type=media, headers=_headers(cache=False))

    return app


def _headers(*, cache: bool) -> dict[str, str]:
    headers = {"X-Content-Type-Options": "nosniff"}
    if cache:
        headers["Cache-Control"] = "max-age=86400"
    return headers


def serve(index: SearchIndex, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the web page until interrupted."""
    try:
        import uvicorn
    except ImportError as err:
        raise ImportError("serve needs FastAPI and uvicorn: pip install 'open_mclip[search]'") from err
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: other machines can reach the index's images; the default is 127.0.0.1", host)
    index.load_model()  # now, not on the first query; a moved or changed checkpoint fails here
    log.info("serving %d images of %s on http://%s:%d/", len(index), index.root, host, port)
    uvicorn.run(create_app(index), host=host, port=port, log_level="warning")
