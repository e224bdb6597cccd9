"""The shape of the tree (docs/ARCHITECTURE.md): no import cycle among the
project's modules, and no function of the services or the orchestrator much
over a screen."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("codeindex_common", "parser_svc", "embed_svc", "store_svc", "orchestrator")
SCREEN = 60  # lines: about a screen


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, at load time or later (inside functions: a lazy import
    still makes the two modules depend on each other)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
    return {t for t in targets if t in modules and t != name}


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
    assert graph["embed_svc.backends.torch"] == {"embed_svc.backends.base"}  # the check sees real edges


def test_no_function_much_over_a_screen():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > SCREEN:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def test_services_import_only_the_common_package():
    """codeindex_common imports no service, and no service imports another (the orchestrator reaches the
    stages over gRPC only)."""
    modules = _modules()
    crossing = []
    for name, path in modules.items():
        own = name.split(".")[0]
        for target in _imports(name, path, modules):
            if target.split(".")[0] not in (own, "codeindex_common"):
                crossing.append(f"{name} -> {target}")
    assert not crossing, crossing
