"""Reading weight files without executing code: safetensors, `torch.load(weights_only=True)`, and
TorchScript archives (OpenAI's original CLIP `.pt` files) through a restricted unpickler.

`torch.load(weights_only=True)` refuses TorchScript archives and `torch.jit.load` runs the TorchScript code
stored in them; our reader only rebuilds tensors from the archive's pickled attribute tree.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import torch

# weights that trainer checkpoints nest under one of these keys
_NESTED_KEYS = ("state_dict", "model", "module")


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a zip whose records include TorchScript code (``*/code/``) beside the pickled data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in name for name in zf.namelist())


class _ScriptObject:
    """Stand-in for a `__torch__.*` module object: keeps the attribute dict the archive pickled."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
# TorchScript's pickler wraps typed lists in these helpers; each only returns its argument
_LIST_BUILDERS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag")


def _identity(value: Any, *_: Any) -> Any:
    return value


class _ArchiveUnpickler(pickle.Unpickler):
    """Allows tensor rebuilding and plain containers; every `__torch__` class becomes `_ScriptObject`."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("collections", "OrderedDict"): OrderedDict,
        **{("torch.jit._pickle", name): _identity for name in _LIST_BUILDERS},
    }

    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._zf, self._prefix, self._storages = zf, prefix, {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return type(name, (_ScriptObject,), {})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]  # the persistent record below only needs the dtype
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")

    def persistent_load(self, pid: tuple) -> torch.TypedStorage:
        kind, dtype, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent record {kind!r} in TorchScript archive")
        if key not in self._storages:
            raw = bytearray(self._zf.read(f"{self._prefix}/data/{key}"))
            untyped = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
            self._storages[key] = torch.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self._storages[key]


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = obj.state if isinstance(obj, _ScriptObject) else obj
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value.detach()
        elif isinstance(value, _ScriptObject):
            _flatten(value, f"{prefix}{name}.", out)


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive, named as `module.state_dict()` names them."""
    with zipfile.ZipFile(path) as zf:
        data_name = next(n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1)
        root = _ArchiveUnpickler(zf.read(data_name), zf, data_name.split("/")[0]).load()
    out: dict[str, torch.Tensor] = {}
    _flatten(root, "", out)
    return out


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, a torch pickle (weights only) or a TorchScript archive."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if is_torchscript_archive(path):
        return read_torchscript_tensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds Python objects beyond tensors; open_mclip only loads weights "
            f"(torch.load weights_only=True) or safetensors: {err}"
        ) from err
    for key in _NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return obj
