"""Run training.main, but SIGKILL the process half-way through writing its Nth checkpoint (test helper).

Usage: python tests/training/kill_during_save.py N [training.main flags]
"""

import io
import os
import signal
import sys

import torch

KILL_AT = int(sys.argv[1])
_real_save = torch.save
_calls = 0


def _dying_save(obj, f, *args, **kwargs):
    global _calls
    _calls += 1
    if _calls == KILL_AT and not isinstance(f, (str, os.PathLike)):
        buffer = io.BytesIO()
        _real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: buffer.tell() // 2])  # half a checkpoint reaches the disk
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_save(obj, f, *args, **kwargs)


torch.save = _dying_save

from training.main import main  # noqa: E402

main(sys.argv[2:])
