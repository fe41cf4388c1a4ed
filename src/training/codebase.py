"""--copy-codebase: the code of this run, copied into its folder, so that the run can be repeated as it was."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import open_mclip
import training

log = logging.getLogger(__name__)


def copy_codebase(destination: Path) -> Path:
    """Copy the `training` and `open_mclip` packages as they are imported (sources, model configs and other data, no
    caches) to `destination`; `PYTHONPATH=destination python -m training.main ...` then runs that copy.

    open_clip copies its checkout the same way (and, like here, goes on running the original). The copy is made in
    a temporary folder and renamed, so a crash leaves no half copy; a copy already there (a resumed run) is kept:
    it is the code the run started with."""
    if destination.exists():
        log.info("keeping the code copied when this run started, in %s", destination)
        return destination
    partial = destination.with_name(destination.name + ".tmp")
    shutil.rmtree(partial, ignore_errors=True)
    for package in (training, open_mclip):
        source = Path(package.__file__).parent
        shutil.copytree(source, partial / source.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    partial.rename(destination)
    log.info("copied the code to %s (run it with PYTHONPATH=%s python -m training.main ...)", destination, destination)
    return destination
