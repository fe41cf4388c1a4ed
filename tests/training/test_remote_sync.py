"""--remote-sync through real fsspec filesystems (`file://` and the in-memory `memory://`): the run folder is copied
from a background thread (errors logged, training never stopped), a final copy is made at the end, and
`--resume latest` on a machine without the run folder downloads the newest checkpoint and continues."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from training.checkpoint import INDEX, load
from training.main import main
from training.params import parse_args
from training.remote import MANIFEST, RemoteSync, fetch_url
from training.resume import remote_candidates


@pytest.fixture
def memory_url(request):
    """A fresh memory:// folder (fsspec's in-memory filesystem is one store per process)."""
    root = f"/test-{re.sub(r'[^A-Za-z0-9_]', '-', request.node.name)}-{time.monotonic_ns()}"
    yield f"memory://{root}"
    if MemoryFileSystem().exists(root):
        MemoryFileSystem().rm(root, recursive=True)


def _remote_bytes(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(fs._strip_protocol(root)) + 1 :]: fs.cat_file(p) for p in fs.find(root)}


def test_sync_copies_new_and_changed_files_once_and_never_partial_ones(tmp_path, memory_url):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "out.log").write_text("line 1\n")
    (run / "checkpoints" / "epoch_1.pt").write_bytes(b"one")
    (run / "checkpoints" / "epoch_2.pt.tmp").write_bytes(b"half")  # a save in progress
    remote = RemoteSync(run, memory_url, every_s=60)
    assert remote.sync() == 2
    assert remote.sync() == 0  # nothing changed
    with open(run / "out.log", "a") as handle:
        handle.write("line 2\n")
    assert remote.sync() == 1
    copied = _remote_bytes(memory_url)
    assert copied["out.log"] == b"line 1\nline 2\n" and copied["checkpoints/epoch_1.pt"] == b"one"
    assert set(copied) == {"out.log", "checkpoints/epoch_1.pt", MANIFEST}
    # a restarted run reads the manifest and copies nothing it already copied
    assert RemoteSync(run, memory_url, every_s=60).sync() == 0


def test_the_background_thread_copies_off_the_training_thread_and_survives_errors(tmp_path, memory_url, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.txt").write_text("a")
    remote = RemoteSync(run, memory_url, every_s=0.05)
    writers, fail = [], threading.Event()
    fail.set()
    real_open = remote.fs.open

    def spying_open(path, mode="rb", **kwargs):
        if "w" in mode:
            writers.append(threading.current_thread().name)
            if fail.is_set():
                raise OSError("remote unreachable")
        return real_open(path, mode, **kwargs)

    remote.fs.open = spying_open
    with caplog.at_level(logging.ERROR, logger="training.remote"):
        remote.start()
        _wait(lambda: "remote unreachable" in caplog.text)
        fail.clear()  # the remote comes back: the next round copies
        _wait(lambda: "a.txt" in _remote_bytes(memory_url))
        (run / "b.txt").write_text("b")  # written just before the end: the final copy takes it
        assert remote.close()
    assert set(writers[:-2]) == {"remote-sync"}  # every copy but the final one (manifest and b.txt, on close)
    assert _remote_bytes(memory_url)["b.txt"] == b"b"
    assert "training goes on" in caplog.text


def _wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if row["split"] == "train"}


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["file", "memory"])
def test_a_run_continues_from_its_remote_copy_on_a_machine_without_it(tmp_path, tiny_synthetic, memory_url, kind):
    url = f"file://{tmp_path / 'bucket'}" if kind == "file" else memory_url
    flags = [*tiny_synthetic(samples=64), "--precision", "fp32", "--log-every-n-steps", "1", "--name", "run"]
    flags += ["--remote-sync", url, "--remote-sync-protocol", "fsspec", "--save-frequency", "1"]
    main([*flags, "--epochs", "1", "--logs", str(tmp_path / "first-machine")])
    local = tmp_path / "first-machine" / "run"
    copied = _remote_bytes(f"{url}/run")
    assert copied["checkpoints/epoch_1.pt"] == (local / "checkpoints" / "epoch_1.pt").read_bytes()
    assert copied["out.log"] == (local / "out.log").read_bytes()  # the final copy came after the last line
    assert json.loads(copied[f"checkpoints/{INDEX}"])["epoch_1.pt"]["step"] == 4

    main([*flags, "--epochs", "2", "--logs", str(tmp_path / "second-machine"), "--resume", "latest"])
    resumed = tmp_path / "second-machine" / "run"
    log = (resumed / "out.log").read_text()
    assert log.startswith((local / "out.log").read_text())  # the first machine's log, continued
    assert f"resumed from {resumed / 'checkpoints' / 'epoch_1.pt'}: epoch 1, step 4" in log
    assert sorted(_losses(resumed)) == list(range(1, 9))  # metrics.jsonl continued too
    assert load(resumed / "checkpoints" / "epoch_2.pt")["step"] == 8
    assert "checkpoints/epoch_2.pt" in _remote_bytes(f"{url}/run")


@pytest.mark.e2e
def test_resume_latest_prefers_the_newer_remote_checkpoint_and_resume_takes_a_url(tmp_path, tiny_synthetic, memory_url):
    flags = [*tiny_synthetic(samples=32), "--precision", "fp32", "--name", "run", "--logs", str(tmp_path)]
    flags += ["--remote-sync", memory_url, "--remote-sync-protocol", "fsspec"]
    main([*flags, "--epochs", "2"])  # epoch_1.pt, epoch_2.pt here and there
    folder = tmp_path / "run" / "checkpoints"
    (folder / "epoch_2.pt").unlink()  # this machine lost its newest checkpoint; the remote has it
    main([*flags, "--epochs", "3", "--resume", "latest"])
    assert f"resumed from {folder / 'epoch_2.pt'}: epoch 2, step 4" in (tmp_path / "run" / "out.log").read_text()

    target = tmp_path / "fetched.pt"
    fetch_url(f"{memory_url}/run/checkpoints/epoch_3.pt", target)
    assert load(target)["step"] == 6
    again = [*tiny_synthetic(samples=32), "--precision", "fp32", "--logs", str(tmp_path), "--name", "from-url"]
    main([*again, "--epochs", "4", "--resume", f"{memory_url}/run/checkpoints/epoch_3.pt"])
    assert "resumed from" in (tmp_path / "from-url" / "out.log").read_text()
    assert load(tmp_path / "from-url" / "checkpoints" / "epoch_4.pt")["step"] == 8


@pytest.mark.e2e
def test_an_existing_remote_run_is_only_continued_with_resume(tmp_path, tiny_synthetic, memory_url):
    flags = [*tiny_synthetic(samples=16), "--remote-sync", memory_url, "--remote-sync-protocol", "fsspec"]
    main([*flags, "--logs", str(tmp_path / "a"), "--name", "run"])
    with pytest.raises(ValueError, match=f"{memory_url}/run already holds a run: use --resume latest"):
        main([*flags, "--logs", str(tmp_path / "b"), "--name", "run"])


class FakeS3(MemoryFileSystem):
    """Stands in for s3fs: what --remote-sync-protocol s3 opens is whatever fsspec has registered for s3://."""

    protocol = ("s3",)
    store, pseudo_dirs = {}, [""]


def test_protocol_s3_is_fsspecs_s3_filesystem_on_an_s3_url(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules["fsspec.registry"]._registry, "s3", FakeS3)  # undone after the test
    cfg = parse_args("--remote-sync s3://bucket/logs".split())  # open_clip's default protocol is s3
    assert cfg.checkpoint.remote_sync_protocol == "s3"
    run = tmp_path / "run"
    run.mkdir()
    (run / "out.log").write_text("hello")
    remote = RemoteSync(run, "s3://bucket/logs/run", every_s=60, protocol="s3")
    assert isinstance(remote.fs, FakeS3) and remote.sync() == 1
    with fsspec.open("s3://bucket/logs/run/out.log", "rb") as handle:
        assert handle.read() == b"hello"
    with pytest.raises(SystemExit):
        parse_args("--remote-sync gs://bucket/logs --remote-sync-protocol s3".split())
    assert "--remote-sync-protocol s3 needs an s3:// URL" in capsys.readouterr().err


def test_remote_sync_flags_are_checked_when_parsed(capsys):
    with pytest.raises(SystemExit):
        parse_args("--remote-sync memory://x --remote-sync-protocol fsspec --remote-sync-frequency 0".split())
    assert "--remote-sync-frequency 0 is invalid (remote_sync_frequency=0)" in capsys.readouterr().err


def test_a_partial_download_never_becomes_a_checkpoint(tmp_path, memory_url, monkeypatch):
    fs, root = fsspec.core.url_to_fs(memory_url)
    fs.pipe_file(f"{root}/big.pt", b"x" * 10_000)
    real_copy = shutil.copyfileobj

    def interrupted(src, dst, length=0):
        dst.write(src.read(100))
        raise ConnectionError("connection reset")

    monkeypatch.setattr(shutil, "copyfileobj", interrupted)
    with pytest.raises(ConnectionError):
        fetch_url(f"{memory_url}/big.pt", tmp_path / "big.pt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shutil, "copyfileobj", real_copy)
    assert fetch_url(f"{memory_url}/big.pt", tmp_path / "big.pt").read_bytes() == b"x" * 10_000


def test_resume_latest_ranks_an_open_clip_bucket_by_its_checkpoint_names(tmp_path, memory_url):
    """open_clip_train's remote holds epoch_N.pt and no index of ours: the names rank them."""
    fs, root = fsspec.core.url_to_fs(memory_url)
    for name in ("epoch_2.pt", "epoch_10.pt", "epoch_latest.pt"):
        fs.pipe_file(f"{root}/run/checkpoints/{name}", b"weights")
    remote = RemoteSync(tmp_path, f"{memory_url}/run", every_s=60)
    ranked = remote_candidates(remote, tmp_path / "checkpoints")
    assert [(c.remote, c.progress.epoch) for c in ranked] == [
        ("checkpoints/epoch_10.pt", 10),
        ("checkpoints/epoch_2.pt", 2),
    ]
    assert ranked[0].path == tmp_path / "checkpoints" / "epoch_10.pt"  # where the download goes
