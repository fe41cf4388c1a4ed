"""Which model an index was built with: its name, its weights (a registry tag, or a file's SHA-256), its embedding
size and its preprocessing, recorded in the index so that a query embeds with the very same model or is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..constants import LOCAL_DIR_PREFIX

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_HASH_BLOCK = 1 << 20


class ModelMismatchError(ValueError):
    """A query's model (or preprocessing) differs from the one the index was built with."""


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in blocks (checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: str, pretrained: str | None) -> str | None:
    """The SHA-256 of the weights behind (model, pretrained): a checkpoint file, or a `local-dir:` folder's weight
    files and config together; None for a registry tag (the tag names the weights) or no weights."""
    if model.startswith(LOCAL_DIR_PREFIX):
        folder = Path(model[len(LOCAL_DIR_PREFIX) :])
        files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES or p.name.endswith("config.json"))
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.name}\0{file_sha256(path)}\0".encode())
        return digest.hexdigest()
    if pretrained and os.path.isfile(pretrained):
        return file_sha256(pretrained)
    return None


def canonical_weights(model: str, pretrained: str | None) -> tuple[str, str | None]:
    """(model, pretrained) with file and folder paths made absolute, so that an index found elsewhere still
    points at its weights."""
    if model.startswith(LOCAL_DIR_PREFIX):
        model = LOCAL_DIR_PREFIX + str(Path(model[len(LOCAL_DIR_PREFIX) :]).resolve())
    if pretrained and os.path.isfile(pretrained):
        pretrained = str(Path(pretrained).resolve())
    return model, pretrained


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The identity of an embedding model as an index records it (`index.json`, key "model")."""

    name: str
    pretrained: str | None
    weights_sha256: str | None
    embed_dim: int
    preprocess: dict[str, Any]

    def __post_init__(self) -> None:
        # compared with what index.json gives back, so tuples become lists here as they do there
        object.__setattr__(self, "preprocess", json.loads(json.dumps(self.preprocess)))

    def describe(self) -> str:
        """One line naming the model, for messages."""
        weights = f", pretrained {self.pretrained!r}" if self.pretrained else ""
        if self.weights_sha256:
            weights += f", weights sha256 {self.weights_sha256[:12]}"
        return f"{self.name!r}{weights}, embedding size {self.embed_dim}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str) -> ModelSpec:
        """Read the "model" entry of an index; a missing or unknown key names `source`."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{source}: the 'model' entry must have keys {sorted(names)}, got {got}")
        return cls(**data)

    def check_same(self, other: ModelSpec, *, index: str) -> None:
        """Refuse `other` (the query's model) unless it is this index's model with this preprocessing."""
        if (self.name, self.pretrained, self.weights_sha256, self.embed_dim) != (
            other.name,
            other.pretrained,
            other.weights_sha256,
            other.embed_dim,
        ):
            raise ModelMismatchError(
                f"index {index} was built with model {self.describe()}, but the query uses {other.describe()}; "
                "query without --model (the index's model is used), or rebuild the index with the new model"
            )
        if self.preprocess != other.preprocess:
            changed = sorted(
                k for k in {*self.preprocess, *other.preprocess} if self.preprocess.get(k) != other.preprocess.get(k)
            )
            detail = "; ".join(
                f"{k}: index {self.preprocess.get(k)!r}, query {other.preprocess.get(k)!r}" for k in changed
            )
            raise ModelMismatchError(
                f"index {index} was built with model {self.describe()} and other preprocessing than the query's "
                f"({detail}); query with the index's preprocessing, or rebuild the index"
            )
