"""The import graph of src/, read from the source: no module imports itself through others (no circle), and the
library (open_mclip) never imports the trainer (training). Imports inside functions count too; imports under
`if TYPE_CHECKING:` do not (they never run), and `from package import submodule` is an import of the submodule
(the package is initialised before any of its modules, so it adds no circle)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Every dotted name an import statement may refer to: the module, and module.name for `from m import name`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement outside `if TYPE_CHECKING:` blocks, at any depth."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        todo.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking(child))
    return found


def import_graph() -> dict[str, set[str]]:
    """{module: the modules of src/ it imports}."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        names = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            imported = _imported(module, path, node)
            if isinstance(node, ast.ImportFrom):
                base, *members = imported
                imported = [name for name in members if name in modules]  # `from package import submodule`
                if len(imported) < len(members):
                    imported.append(base)  # some names are defined in `base` itself
            names.update(name for name in imported if name in modules)
        graph[module] = {name for name in names if name != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_reader_skips_type_checking_imports():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nimport b\ndef f():\n    import c\n"
    )
    assert sorted(alias.name for node in _runtime_imports(tree) for alias in node.names) == ["TYPE_CHECKING", "b", "c"]


def test_the_reader_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_src():
    graph = import_graph()
    assert {"training.main", "training.data", "training.data.wds", "open_mclip.factory"} <= set(graph)
    assert "training.config" in graph["training.data.wds"]  # relative imports resolve
    assert circles(graph) == []


def test_the_library_never_imports_the_trainer():
    graph = import_graph()
    crossing = {m: sorted(d for d in deps if d.split(".")[0] == "training") for m, deps in graph.items()}
    assert {m: d for m, d in crossing.items() if d and m.split(".")[0] == "open_mclip"} == {}
