"""The layers as ARCHITECTURE.md draws them, checked on the code: which layer may import which,
that the pure layers import no I/O, that the agent imports only what it shares with the
controller, and that no two modules import each other, even from inside a function.

Imports are read from the source (every `import` statement, at any depth, `TYPE_CHECKING` ones
included), so a cycle hidden behind an import inside a function is found too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("reconciler", "agent")

# Layer of a module: the longest matching prefix wins.
LAYERS = {
    "reconciler": "shared",  # the package face: API version constants only
    "reconciler.wire": "shared",
    "reconciler.errors": "shared",
    "reconciler.logs": "shared",
    "reconciler.manifests": "manifests",
    "reconciler.compose": "manifests",  # another way in to the manifests: compose files
    "reconciler.secrets": "secrets",
    "reconciler.core": "core",
    "reconciler.store": "store",
    "reconciler.controller": "controller",
    "reconciler.server": "server",
    "reconciler.demo": "demo",
    "reconciler.cli": "cli",
    "reconciler.__main__": "cli",
    "agent": "agent",
}
# What each layer may import, besides itself.
ALLOWED = {
    "shared": set(),
    "secrets": {"shared"},
    "manifests": {"shared", "secrets"},
    "core": {"shared", "manifests", "secrets"},
    "store": {"shared", "core"},
    "controller": {"shared", "manifests", "secrets", "core", "store"},
    "server": {"shared", "manifests", "core", "secrets", "store"},  # the dashboard shows manifests
    "demo": {"shared", "core", "secrets", "store"},
    "cli": set(LAYERS.values()) - {"cli"},  # the commands compose everything
    "agent": {"shared"},
}
PURE = ("shared", "manifests", "core")
# Libraries that talk to the network, a database, an engine, git or other processes.
IO_LIBRARIES = frozenset(
    [
        "sqlalchemy",
        "alembic",
        "psycopg",
        "fastapi",
        "starlette",
        "uvicorn",
        "httpx",
        "requests",
        "urllib3",
        "docker",
        "git",
        "watchfiles",
        "subprocess",
        "socket",
        "http",
        "urllib.request",
        "asyncio",
    ]
)
# The libraries the agent may load: the distribution installs it with these alone.
AGENT_LIBRARIES = frozenset({"msgspec", "requests", "docker", "structlog"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


MODULES = modules()


def imports(name: str, path: Path) -> Iterator[str]:
    """Every module `name` imports, absolute, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in MODULES else base


def ours(target: str) -> str | None:
    """The module of ours `target` is, or None for a library."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def layer(name: str) -> str:
    matches = [prefix for prefix in LAYERS if name == prefix or name.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)]


GRAPH = {
    name: {t for t in (ours(i) for i in imports(name, path)) if t is not None and t != name}
    for name, path in MODULES.items()
}
LIBRARIES = {
    name: {i for i in imports(name, path) if ours(i) is None} for name, path in MODULES.items()
}


def test_every_module_has_a_layer() -> None:
    assert {name for name in MODULES if layer(name) not in ALLOWED} == set()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_only_from_the_layers_below_it(name: str) -> None:
    mine = layer(name)
    wrong = sorted(t for t in GRAPH[name] if layer(t) != mine and layer(t) not in ALLOWED[mine])
    assert wrong == [], f"{name} ({mine}) may not import {wrong}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n) in PURE))
def test_pure_layers_do_no_io(name: str) -> None:
    touched = sorted(
        lib for lib in LIBRARIES[name] if lib in IO_LIBRARIES or lib.split(".")[0] in IO_LIBRARIES
    )
    assert touched == [], f"{name} is pure and may not import {touched}"


def test_the_agent_imports_only_what_it_shares_with_the_controller() -> None:
    shared = {t for name in MODULES if layer(name) == "agent" for t in GRAPH[name]}
    assert {t for t in shared if not t.startswith("agent")} <= {
        "reconciler",
        "reconciler.wire",
        "reconciler.errors",
        "reconciler.logs",
    }


def test_the_agent_needs_only_its_own_distribution() -> None:
    """What the agent and the shared modules import is the stdlib or the agent's four
    libraries: `pip install hedgerow` without the controller extra is enough on a device."""
    import sys

    agent_side = [n for n in MODULES if layer(n) in ("agent", "shared")]
    needed = {lib.split(".")[0] for n in agent_side for lib in LIBRARIES[n]}
    assert needed - sys.stdlib_module_names - {"__future__"} <= AGENT_LIBRARIES


def test_only_the_engine_adapter_imports_docker() -> None:
    users = sorted(n for n in MODULES if any(lib.split(".")[0] == "docker" for lib in LIBRARIES[n]))
    assert users == ["agent.engine"]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a cycle planted in a copy of the graph is found."""
    planted = {name: set(targets) for name, targets in GRAPH.items()}
    planted["reconciler.core.plan"].add("reconciler.core.status")
    assert ["reconciler.core.plan", "reconciler.core.status"] in cycles(planted)
