"""Run a program written for open_clip on open_mclip, unchanged: `python -m open_mclip.as_open_clip PROGRAM [ARGS]`.

`install_as_open_clip()` makes `import open_clip` and `import open_clip.<submodule>` give open_mclip and its
submodules of the same name (the very same module objects, so classes and caches are shared); a submodule of
open_clip's that has no counterpart here fails to import with a message that says so. PROGRAM is, in this order:
a script file, `package.module:function`, the name of an installed console script (e.g. `clip_benchmark`), or a
module run as `__main__` (like `python -m`). Nothing named `open_clip` needs to be installed; if the real open_clip
is already imported in this process, installing refuses (the two cannot share a name).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import runpy
import sys
from types import ModuleType

ALIAS, TARGET = "open_clip", "open_mclip"
USAGE = "usage: python -m open_mclip.as_open_clip PROGRAM [ARGS...]  (script, module:function, console script, module)"


class _SameModule(importlib.abc.Loader):
    """Loads `open_clip.X` as the already imported `open_mclip.X` (no second copy)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the target module is imported already."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Resolves every `open_clip.*` name to `open_mclip.*`, before any installed `open_clip` package is looked at."""

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = TARGET + fullname[len(ALIAS) :]
        if importlib.util.find_spec(real) is None:
            message = f"{fullname} has no counterpart in open_mclip (docs/migrating.md lists what is covered)"
            raise ModuleNotFoundError(message, name=fullname)
        return importlib.machinery.ModuleSpec(fullname, _SameModule(real), is_package=real == TARGET)


def install_as_open_clip() -> ModuleType:
    """Make `open_clip` (and `open_clip.<submodule>`) import open_mclip in this process; returns open_mclip."""
    current = sys.modules.get(ALIAS)
    target = importlib.import_module(TARGET)
    if current is not None and current is not target:
        raise RuntimeError(
            f"the real open_clip ({getattr(current, '__file__', '?')}) is already imported in this process; "
            "install the alias before anything imports open_clip (python -m open_mclip.as_open_clip PROGRAM)"
        )
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
    for name, module in list(sys.modules.items()):  # open_mclip submodules imported so far
        if name == TARGET or name.startswith(TARGET + "."):
            sys.modules[ALIAS + name[len(TARGET) :]] = module
    return target


def _console_script(name: str):
    """The function behind an installed console script named `name`, or None."""
    for entry in importlib.metadata.entry_points(group="console_scripts"):
        if entry.name == name:
            return entry.load()
    return None


def run(program: str, args: list[str]) -> None:
    """Run `program` with `sys.argv = [program, *args]` after installing the alias."""
    install_as_open_clip()
    sys.argv = [program, *args]
    if os.path.isfile(program):
        runpy.run_path(program, run_name="__main__")
        return
    if ":" in program:
        module, _, function = program.partition(":")
        result = getattr(importlib.import_module(module), function)()
    elif (script := _console_script(program)) is not None:
        result = script()
    else:
        runpy.run_module(program, run_name="__main__", alter_sys=True)
        return
    if isinstance(result, int) and result:
        raise SystemExit(result)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    run(argv[0], argv[1:])


if __name__ == "__main__":
    main()
