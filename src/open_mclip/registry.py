"""Model-config discovery: the JSON files that ship in `model_configs/` plus any folder a user adds.

Files are indexed lazily (no I/O at import) and parsed when asked for, so a malformed user file only fails
when that model is requested, with the file and key named.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

from .config import ModelConfig
from .pretrained import close_matches_message

_BUILTIN_DIR = Path(__file__).parent / "model_configs"


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class ConfigRegistry:
    """Maps model names to their JSON files; user folders added later take precedence over built-ins."""

    def __init__(self) -> None:
        self._paths: dict[str, Path] | None = None
        self._extra: list[Path] = []
        self._cache: dict[str, ModelConfig] = {}

    def _index(self) -> dict[str, Path]:
        if self._paths is None:
            self._paths = {}
            for folder_or_file in [_BUILTIN_DIR, *self._extra]:
                self._scan(folder_or_file)
        return self._paths

    def _scan(self, path: Path) -> None:
        files = [path] if path.is_file() else sorted(path.glob("*.json"))
        for file in files:
            self._paths[file.stem] = file
            self._cache.pop(file.stem, None)

    def add(self, path: str | os.PathLike) -> None:
        """Register one JSON file or every JSON file in a folder (ours or open_clip's schema)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"model config path {path} does not exist")
        if path.is_file() and path.suffix != ".json":
            raise ValueError(f"model config {path} is not a .json file")
        self._extra.append(path)
        if self._paths is not None:
            self._scan(path)

    def names(self) -> list[str]:
        return sorted(self._index(), key=_natural_key)

    def get(self, name: str) -> ModelConfig:
        """A fresh copy of the parsed config; unknown names raise ValueError with the closest names."""
        paths = self._index()
        if name not in paths:
            raise ValueError(close_matches_message(name, list(paths), "model"))
        if name not in self._cache:
            path = paths[name]
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"model config {path} is not valid JSON: {err}") from err
            self._cache[name] = ModelConfig.from_dict(data, source=str(path))
        return copy.deepcopy(self._cache[name])


_REGISTRY = ConfigRegistry()


def list_models() -> list[str]:
    """Names of every known architecture, in natural sort order."""
    return _REGISTRY.names()


def add_model_config(path: str | os.PathLike) -> None:
    """Make the configs in a JSON file or folder available by file name (open_clip's folders work too)."""
    _REGISTRY.add(path)


def model_config(name: str) -> ModelConfig:
    """The typed `ModelConfig` of a named architecture (a copy: changing it changes nothing else); an unknown name is
    a ValueError naming the closest ones. open_clip's dict form is `open_mclip.get_model_config(name)`."""
    return _REGISTRY.get(name)
