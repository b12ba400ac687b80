"""The import rules of docs/architecture.md, checked on the source.

A module may import modules of its own layer or of a lower one, never of a
higher one, and the module graph has no cycle (imports inside functions and
``TYPE_CHECKING`` blocks count too: a cycle that only runs late is still a
cycle a reader has to untangle).  The layer order is written once, here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "infermeter"

# Bottom first.  A top-level module (``errors``) or a package (``load``) per entry.
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "errors", "secrets", "process", "core"),  # contracts and plain utilities
    ("workloads", "load", "clients", "testserver", "embedded", "backends"),  # prompts, load, wire, servers we own
    ("storage",),  # crash-safe files
    ("metrics", "telemetry"),  # statistics and validity; GPU and server sampling
    ("servers",),  # launching servers under test
    ("runner",),  # one run: target, drive, analyse, write
    ("experiments",),  # sweeps, the store, imports
    ("reports",),  # charts, tables, compare
    ("cli", "__main__"),  # the command line
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                if sub in mods:  # ``from pkg import submodule``: an edge to the submodule only
                    found.add(sub)
                elif origin in mods:
                    found.add(origin)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in mods)
    found.discard(name)
    return found


def _layer_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {name: _imports(name, path, _modules()) for name, path in _modules().items()}


def test_every_package_has_a_layer():
    unplaced = sorted({_layer_key(m) for m in GRAPH} - set(LAYER_OF))
    assert not unplaced, f"add these to LAYERS in {Path(__file__).name}: {unplaced}"


def test_no_import_from_a_higher_layer():
    upward = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                    if LAYER_OF.get(_layer_key(b), -1) > LAYER_OF.get(_layer_key(a), 99))
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_core_imports_nothing_above_it():
    allowed = set(LAYERS[0])
    bad = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() if _layer_key(a) == "core"
                 for b in targets if _layer_key(b) not in allowed)
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_over_500_lines(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= 500, f"{path.relative_to(SRC)} has {lines} lines; split it by concern"


def test_tests_mirror_the_packages():
    """Unit and integration tests live in a folder per package (tests/<kind>/<package>/), not by theme."""
    tests = Path(__file__).resolve().parents[1]
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    misplaced = []
    for kind in ("unit", "integration"):
        for path in (tests / kind).rglob("test_*.py"):
            rel = path.relative_to(tests / kind)
            if rel == Path("test_architecture.py"):
                continue  # about the whole package
            if len(rel.parts) != 2 or rel.parts[0] not in packages:
                misplaced.append(f"{kind}/{rel}")
    assert not misplaced, f"put these under tests/<kind>/<package>/: {misplaced}"
