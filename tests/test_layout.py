"""The package's module layout: layers, an acyclic import graph, an engine that knows no model, and
no private names used across module lines (package, benchmarks, tools, notebooks)."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "gstutorial"

#: Each module's layer (the order of gstutorial/__init__.py's list); a module imports only from lower
#: layers, which also makes the graph acyclic.
LAYERS = {
    "checks": 0, "runtime": 0, "files": 0, "resources": 0, "primitives": 1,
    "kl": 2, "data": 2, "elbo": 3, "reparam": 3, "gumbel": 3, "straight_through": 4, "estimators": 4,
    "estimator_lab": 5,
    "engine": 6,
    "nets": 7, "analysis": 8, "catvae": 9, "jointvae": 9,
    "checkpoints": 10, "port": 10, "cli": 11, "interactive": 11, "__main__": 12,
}
MODELS = {"catvae", "jointvae", "nets", "analysis", "checkpoints", "cli", "port"}


def _module_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def _imported_modules(name: str, path: Path) -> set[str]:
    """gstutorial modules ``name`` imports anywhere in its file (function-level imports included)."""
    found: set[str] = set()
    modules = set(_module_files())
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "gstutorial" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 or base.startswith("gstutorial"):
                parts = base.split(".") if node.level == 1 else base.split(".")[1:]
                if parts and parts[0]:
                    found.add(parts[0])
                else:  # from . import x / from gstutorial import x
                    found.update(a.name for a in node.names if a.name in modules)
    return found - {name}


def _graph() -> dict[str, set[str]]:
    return {name: _imported_modules(name, path) for name, path in _module_files().items()}


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_module_has_a_layer():
    assert set(_module_files()) == set(LAYERS)


def test_import_graph_is_acyclic():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_modules_import_only_lower_layers():
    upward = sorted((name, dep) for name, deps in _graph().items() for dep in deps if LAYERS[dep] >= LAYERS[name])
    assert upward == []


def test_the_engine_imports_no_model():
    assert _closure(_graph(), "engine") & MODELS == set()


def test_the_graph_sees_function_level_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from . import engine\n    import gstutorial.cli as c\n")
    assert _imported_modules("probe", source) == {"engine", "cli"}


# --------------------------------------------------------------------------------------------------
# Private names
# --------------------------------------------------------------------------------------------------

def _sources() -> list[tuple[str, list[str]]]:
    """(label, python sources) of every package module, benchmark and tool, and of each notebook's code
    cells (parsed one by one, the magics left out)."""
    files = [*sorted(PACKAGE.glob("*.py")), *sorted((REPO / "benchmarks").glob("*.py")),
             *sorted((REPO / "tools").glob("*.py"))]
    out = [(str(p.relative_to(REPO)), [p.read_text()]) for p in files]
    for nb in sorted((REPO / "book").glob("*.ipynb")):
        cells = [c["source"] for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        out.append((nb.name, ["\n".join(line for line in "".join(c).splitlines() if not line.startswith(("%", "!")))
                              for c in cells]))
    return out


def _cross_module_uses(label: str, sources: list[str]) -> list[tuple[str, str]]:
    """(module, name) for each name taken from a gstutorial module: ``from gstutorial.m import name``
    and ``alias.name`` where ``alias`` is a gstutorial module (aliases carry over from one source to
    the next, as from one notebook cell to the next)."""
    own = Path(label).stem if label.startswith("gstutorial/") else None
    uses: list[tuple[str, str]] = []
    aliases: dict[str, str] = {}
    for source in sources:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if base == "gstutorial" or (node.level == 1 and not base):  # modules, not names
                    aliases.update({a.asname or a.name: a.name for a in node.names})
                elif base.startswith("gstutorial.") or node.level == 1:
                    module = base.split(".")[1] if base.startswith("gstutorial.") else base.split(".")[0]
                    uses += [(module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                aliases.update({a.asname: a.name.split(".")[1] for a in node.names
                                if a.name.startswith("gstutorial.") and a.asname})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                uses.append((aliases[node.value.id], node.attr))
    return [(m, n) for m, n in uses if m != own]


SOURCES = _sources()


@pytest.mark.parametrize(("label", "sources"), SOURCES, ids=[label for label, _ in SOURCES])
def test_no_private_name_crosses_a_module_line(label, sources):
    private = [f"{m}.{n}" for m, n in _cross_module_uses(label, sources) if n.startswith("_")]
    assert private == [], f"{label} uses private names of other modules"


@pytest.mark.parametrize(("label", "sources"), SOURCES, ids=[label for label, _ in SOURCES])
def test_names_taken_from_a_module_are_in_its_all(label, sources):
    missing = []
    for module, name in _cross_module_uses(label, sources):
        if name.startswith("_") or module not in LAYERS or module == "__main__":
            continue
        exported = getattr(importlib.import_module(f"gstutorial.{module}"), "__all__", [])
        if name not in exported:
            missing.append(f"{module}.{name}")
    assert sorted(set(missing)) == [], f"{label} uses names its modules do not export"


def test_the_private_name_scan_finds_both_forms():
    source = "from gstutorial.engine import _binarize\nimport gstutorial.gumbel as G\nG._helper(1)\n"
    assert _cross_module_uses("x.py", [source]) == [("engine", "_binarize"), ("gumbel", "_helper")]
