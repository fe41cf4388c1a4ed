"""Optional dependencies (the `hf` and `timm` extras), imported only where a feature needs them."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_extra(module: str, *, extra: str, needed_for: str) -> ModuleType:
    """`module`, or an ImportError that says which feature needs it and which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{needed_for} needs the optional package {module!r}: pip install 'open_mclip[{extra}]'"
        ) from err
