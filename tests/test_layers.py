"""Layers only import downward, and no two packages import each other.

The layer map (the same as in docs/design.md), top first; a module may import its own package,
any package of a lower layer, and another package of its own layer unless that makes a cycle:

    cli, __main__                            the command line
    demo                                     a program built on the API, like the CLI
    alloy (the package), api, api_tools,     the public API (_merging: the steps of api.merge)
    api_search, _merging, convert
    evaluate, report, analysis, lora,        what the API composes: LoRA merge and extract are
    search                                   programs beside the planner; the search drives
                                             merges and evaluations
    plan                                     config -> jobs, the executor
    arch, io, config                         architecture knowledge, reading and writing
                                             (LoRA adapters as sources in io/lora), the config
    methods                                  the merge methods and their registry
    kernels, devices, errors, tabulate,      the bottom
    _version, _interrupt

Imports under ``if TYPE_CHECKING:`` are not edges: they run no code (``alloy/__init__.py``
names its lazily loaded exports that way).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "alloy"

LAYERS: list[set[str]] = [
    {"cli", "__main__"},
    {"demo"},
    {"alloy", "api", "api_tools", "api_search", "_merging", "convert"},
    {"evaluate", "report", "analysis", "lora", "search"},
    {"plan"},
    {"arch", "io", "config"},
    {"methods"},
    {"kernels", "devices", "errors", "tabulate", "_version", "_interrupt"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _unit(module: str) -> str:
    """The layer unit of ``alloy.x.y``: its first part below ``alloy`` (``alloy`` itself for
    the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "alloy"


def _module_of(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every ``alloy`` import outside ``if TYPE_CHECKING:`` blocks, at any
    depth (function-level imports count)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("alloy"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "alloy":
                found.extend((node.lineno, f"alloy.{a.name}") for a in node.names)
            elif node.module.startswith("alloy."):
                found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> where, for every import between two units."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        here = _unit(_module_of(path))
        for line, module in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            there = _unit(module)
            if there != here:
                edges[(here, there)].append(f"{path.relative_to(SRC.parent)}:{line}")
    return edges


def _cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """One cycle of the graph ``edges``, or None."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)) is not None:
            return found
    return None


def test_every_package_and_module_has_a_layer() -> None:
    units = {_unit(_module_of(p)) for p in SRC.rglob("*.py")}
    assert units - RANK.keys() == set(), "add these to LAYERS (and docs/design.md)"


def test_no_import_goes_up_a_layer() -> None:
    upward = {
        f"{a} -> {b}: {', '.join(where)}" for (a, b), where in _edges().items() if RANK[a] > RANK[b]
    }
    assert upward == set()


def test_no_packages_import_each_other() -> None:
    assert _cycle(set(_edges())) is None


def test_the_walk_sees_what_it_must_refuse() -> None:
    # the checks above pass only if they can fail: an upward edge and a cycle are found
    tree = ast.parse(
        "def f():\n    from alloy.api import plan\n"
        "if TYPE_CHECKING:\n    from alloy.cli import main\n"
    )
    assert _runtime_imports(tree) == [(2, "alloy.api")]
    assert RANK["methods"] > RANK["api"]
    assert _cycle({("plan", "lora"), ("lora", "io"), ("io", "plan")}) == [
        "io",
        "plan",
        "lora",
        "io",
    ]
    assert _cycle({("plan", "lora"), ("lora", "io")}) is None
