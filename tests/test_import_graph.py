"""No import cycle among the project's modules (adainf_env/, agents/, adainf_lab/).

The graph is read from the source with :mod:`ast`, so it holds every import a module can execute:

* module-level imports **and function-local ones** (a late import inside a function is still a dependency: it only
  hides the cycle from the interpreter until the function runs);
* ``from package import name`` points at ``package.name`` when that is a module, else at ``package``;
* imports under ``if TYPE_CHECKING:`` are left out: they never run (annotations only), which is what
  ``TYPE_CHECKING`` is for;
* the implicit import of a module's parent packages (``import agents.sb3.scheduler`` first runs ``agents/__init__``)
  is left out: Python initialises a package before its submodules by design, and a package ``__init__`` that
  re-exports its submodules would otherwise be "in a cycle" with every one of them. An explicit import of a package
  (``from agents import make_scheduler``) counts as an edge to its ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("adainf_env", "agents", "adainf_lab")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` of every import outside ``if TYPE_CHECKING:``."""
    out: list[tuple[str, str | None, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, None, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.extend((target, a.name, node.lineno) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported project module: first line}}``."""
    mods = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, attr, line in _imports(tree, name, path.name == "__init__.py"):
            dest = f"{target}.{attr}" if attr and f"{target}.{attr}" in mods else target
            if dest in mods and dest != name:
                edges.setdefault(dest, line)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_graph_sees_function_local_imports_and_skips_type_checking():
    g = import_graph()
    assert "agents.registry" in g["agents.evaluation.routing_gains"]  # imported inside a function
    assert "agents.sb3.scheduler" not in g["agents.sb3.callback"]  # under `if TYPE_CHECKING:` only
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_project_modules():
    g = import_graph()
    found = cycles(g)
    detail = []
    for comp in found:
        members = set(comp)
        detail.append(" <-> ".join(comp) + ": " + "; ".join(
            f"{m} imports {d} (line {line})" for m in comp for d, line in sorted(g[m].items()) if d in members))
    assert not found, "import cycles:\n" + "\n".join(detail)
