"""Run `python -m open_mclip.search index ...`, but SIGKILL the process half-way through writing the embeddings of
its Nth chunk (test helper): half a .npy reaches its temporary file, the manifest never lists it.

Usage: python tests/search/kill_during_index.py N index SOURCE --index PATH ...
"""

import os
import signal
import sys

from open_mclip.search import store

KILL_AT = int(sys.argv[1])
_real_write = store.atomic_write
_chunks = 0


def _dying_write(path, write):
    global _chunks
    if path.suffix == ".npy":
        _chunks += 1
        if _chunks == KILL_AT:
            tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
            with open(tmp, "wb") as f:
                write(f)
                f.truncate(f.tell() // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    return _real_write(path, write)


store.atomic_write = _dying_write

from open_mclip.search.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
