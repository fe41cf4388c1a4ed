"""Remote copies of the run folder (--remote-sync): new and changed files go to any fsspec URL from a background
thread that never blocks training, and a final copy is made when the run ends.

The remote mirrors the run folder as open_clip_train lays it out (`URL/NAME/out.log`,
`URL/NAME/checkpoints/epoch_3.pt`). Each file is uploaded under a temporary name and moved into place, so nobody
reading the remote sees half a checkpoint. `.remote_sync.json` at the remote root records the size and mtime of the
local file each copy was made from: a restarted run does not copy unchanged files again, and `--resume latest`
matches the remote copies against the checkpoint index without downloading them (see `checkpoint.py`).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from open_mclip.extras import import_extra

log = logging.getLogger(__name__)

MANIFEST = ".remote_sync.json"
_PARTIAL = (".tmp", ".uploading", ".download")  # files being written: never copied


def remote_filesystem(url: str, *, protocol: str) -> tuple[Any, str]:
    """(fsspec filesystem, root path) of `url`. `protocol` "s3" is fsspec's s3 filesystem (s3fs): the same bucket
    objects open_clip_train's `aws s3 sync` writes; "fsspec" takes the filesystem the URL names."""
    fsspec = import_extra("fsspec", extra="training", needed_for="--remote-sync")
    if protocol == "s3" and not url.startswith("s3://"):
        raise ValueError(f"--remote-sync {url} with --remote-sync-protocol s3 needs an s3:// URL")
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:  # e.g. s3:// without s3fs installed, or an unknown protocol
        raise ValueError(f"--remote-sync {url}: fsspec cannot open it ({err})") from None
    return fs, root.rstrip("/")


class RemoteSync:
    """Copies `local` (a run folder) to `url` now (`sync`) and every `every_s` seconds in a thread (`start`);
    `close` stops the thread and makes the final copy. Errors in the background are logged, never raised."""

    def __init__(self, local: str | os.PathLike, url: str, *, every_s: float, protocol: str = "fsspec") -> None:
        self.local, self.url, self.every_s = Path(local), url.rstrip("/"), every_s
        self.fs, self.root = remote_filesystem(self.url, protocol=protocol)
        self.manifest: dict[str, dict[str, int]] = self._read_manifest()
        self.restored: list[str] = []  # what `restore` downloaded
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ reading
    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def _read_manifest(self) -> dict[str, dict[str, int]]:
        text = self.read_text(MANIFEST)
        try:
            return dict(json.loads(text)["files"]) if text else {}
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring the unreadable %s at %s: every file will be copied again", MANIFEST, self.url)
            return {}

    def read_text(self, rel: str) -> str | None:
        """The remote file `rel` as text, or None where there is none."""
        try:
            with self.fs.open(self._path(rel), "rb") as handle:
                return handle.read().decode("utf-8")
        except FileNotFoundError:
            return None

    def files(self, folder: str = "") -> list[str]:
        """Paths relative to the remote root of the files under `folder` (all of them by default)."""
        base = self._path(folder).rstrip("/") if folder else self.root
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        prefix = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        return sorted(p[len(prefix) :] for p in (self.fs._strip_protocol(f) for f in found) if p.startswith(prefix))

    def fetch(self, rel: str, dest: str | os.PathLike) -> Path:
        """Download `rel` to `dest` through a temporary file and a rename (a partial download is never seen)."""
        start = time.perf_counter()
        _download(self.fs, self._path(rel), Path(dest))
        log.info("downloaded %s to %s in %.1f s", self.url_of(rel), dest, time.perf_counter() - start)
        return Path(dest)

    # ------------------------------------------------------------------------------------------ writing
    def _local_files(self) -> list[str]:
        """Files of the run folder to copy, checkpoints first and small files after them."""
        rels = [
            p.relative_to(self.local).as_posix()
            for p in self.local.rglob("*")
            if p.is_file() and not p.name.endswith(_PARTIAL)
        ]
        return sorted(rels, key=lambda rel: (not rel.endswith(".pt"), rel))

    def _upload(self, rel: str) -> bool:
        """Copy one file if it changed since its last copy; the copy is the file as it was when opened (a
        checkpoint replaced meanwhile is copied at the next round)."""
        with open(self.local / rel, "rb") as src:
            st = os.fstat(src.fileno())
            signature = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            if self.manifest.get(rel) == signature:
                return False
            target = self._path(rel)
            partial = target + ".uploading"
            self.fs.makedirs(self.fs._parent(target), exist_ok=True)
            with self.fs.open(partial, "wb") as dst:
                _copy_exactly(src, dst, st.st_size)
            self.fs.mv(partial, target)
        self.manifest[rel] = signature
        return True

    def _write_manifest(self) -> None:
        partial = self._path(MANIFEST) + ".uploading"
        with self.fs.open(partial, "wb") as dst:
            dst.write(json.dumps({"files": self.manifest}, indent=1, sort_keys=True).encode("utf-8"))
        self.fs.mv(partial, self._path(MANIFEST))

    def sync(self) -> int:
        """Copy what changed now; returns the number of files copied. Raises on the first failure."""
        start, copied = time.perf_counter(), 0
        for rel in self._local_files():
            try:
                copied += self._upload(rel)
            except FileNotFoundError:  # removed meanwhile (--delete-previous-checkpoint)
                continue
        if copied:
            self._write_manifest()
        log.debug("remote sync to %s: %d file(s) copied in %.1f s", self.url, copied, time.perf_counter() - start)
        return copied

    def restore(self) -> list[str]:
        """Download the remote files the run folder lacks, but checkpoints (a resume fetches the one it needs):
        a run resumed on a fresh machine continues its out.log and metrics instead of replacing them remotely.
        Called before logging is set up (out.log may be among them): the list is in `restored`, to be logged."""
        for rel in self.files():
            if rel == MANIFEST or rel.endswith((".pt", *_PARTIAL)) or (self.local / rel).exists():
                continue
            (self.local / rel).parent.mkdir(parents=True, exist_ok=True)
            dest = _download(self.fs, self._path(rel), self.local / rel)
            if rel in self.manifest:  # the copy is what the remote holds: no need to send it back
                os.utime(dest, ns=(time.time_ns(), self.manifest[rel]["mtime_ns"]))
            self.restored.append(rel)
        return self.restored

    def _sync_logged(self, *, final: bool = False) -> bool:
        """`sync`, its failure logged instead of raised; the final one logs before it copies, so the copy of out.log
        ends with the run's last line."""
        if final:
            log.info("final remote sync to %s", self.url)
        try:
            copied = self.sync()
            if not final:
                log.info("remote sync to %s: %d file(s) copied", self.url, copied)
            return True
        except Exception as err:  # a background copy must never stop training
            log.error("remote sync to %s failed: %s: %s (training goes on)", self.url, type(err).__name__, err)
            return False

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sync_logged()

    def start(self) -> None:
        """Copy every `every_s` seconds in a daemon thread until `close`; `close` also runs at interpreter exit, so
        a run that fails still leaves its last checkpoints at the remote."""
        self._thread = threading.Thread(target=self._loop, name="remote-sync", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def close(self) -> bool:
        """Stop the background thread and make the final copy; True when it succeeded."""
        if self._thread is None:
            return True
        self._stop.set()
        self._thread.join()
        self._thread = None
        atexit.unregister(self.close)
        return self._sync_logged(final=True)


def _download(fs: Any, path: str, dest: Path) -> Path:
    tmp = dest.with_name(dest.name + ".download")
    try:
        with fs.open(path, "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch_url(url: str, dest: str | os.PathLike) -> Path:
    """Download any fsspec URL (e.g. `--resume s3://bucket/run/checkpoints/epoch_3.pt`) to `dest`, atomically."""
    fs, path = remote_filesystem(url, protocol="fsspec")
    start = time.perf_counter()
    try:
        _download(fs, path, Path(dest))
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} does not exist") from None
    log.info("downloaded %s to %s in %.1f s", url, dest, time.perf_counter() - start)
    return Path(dest)


def read_bytes(url: str) -> bytes:
    """The content of any fsspec URL (a rank that does not see rank 0's download reads the checkpoint there)."""
    fs, path = remote_filesystem(url, protocol="fsspec")
    with fs.open(path, "rb") as handle:
        return handle.read()


def _copy_exactly(src, dst, size: int) -> None:
    """Copy the first `size` bytes of `src` (a file still being appended to is copied as it was when opened)."""
    left = size
    while left > 0:
        chunk = src.read(min(left, 1 << 22))
        if not chunk:
            break
        dst.write(chunk)
        left -= len(chunk)
