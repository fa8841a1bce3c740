"""Layers import downward only, and every package states its public names.

Layer order, highest first (a module may import its own layer and the layers below it):

    entry points and composition root   app, cli, __main__, the package itself; local (the extra)
    http, ops                           the sidecar and the operator tools
    pipeline                            the ordered steps of one command
    messaging, outbox, idempotency,     the building blocks the pipeline drives
    resilience
    observability, errors, settings,    what every layer may use
    clock, batching

Within a layer, packages may import each other, but never in a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import s2s_daemon

PACKAGE = Path(s2s_daemon.__file__).parent
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__", "__main__", "app", "cli", "local"}),
    frozenset({"http", "ops"}),
    frozenset({"pipeline", "delivery"}),
    frozenset({"messaging", "outbox", "idempotency", "resilience"}),
    frozenset({"observability", "errors", "settings", "clock", "batching", "schemas"}),
)
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}


def _part(path: Path) -> str:
    """The top-level package or module of ``s2s_daemon`` a file belongs to (``__init__`` for the package's own)."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imported_parts(path: Path) -> Iterator[tuple[int, str]]:
    """(line, part) for every ``s2s_daemon`` import in the file, nested and type-only ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package_parts = path.relative_to(PACKAGE).parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("s2s_daemon."):
                    yield node.lineno, alias.name.split(".")[1]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's own package
                base = list(package_parts[: len(package_parts) - node.level + 1])
                dotted = [*base, *(node.module.split(".") if node.module else [])]
                if dotted:
                    yield node.lineno, dotted[0].removesuffix(".py")
                else:
                    yield from ((node.lineno, alias.name) for alias in node.names)
            elif node.module == "s2s_daemon":
                yield from ((node.lineno, alias.name) for alias in node.names)
            elif node.module and node.module.startswith("s2s_daemon."):
                yield node.lineno, node.module.split(".")[1]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer() -> None:
    """A new package or top-level module must be placed in the layer order before it can be imported."""
    parts = {_part(path) for path in _sources()}
    assert parts - RANK.keys() == set()


def test_imports_point_down() -> None:
    """No module imports from a layer above its own."""
    upward = []
    for path in _sources():
        own = _part(path)
        for line, imported in _imported_parts(path):
            if imported in RANK and RANK[imported] < RANK[own]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} -> {imported}")
    assert upward == []


def test_packages_of_one_layer_form_no_cycle() -> None:
    """Imports between the packages of one layer go one way only."""
    edges: dict[str, set[str]] = {}
    for path in _sources():
        own = _part(path)
        for _, imported in _imported_parts(path):
            if imported != own and RANK.get(imported) == RANK[own]:
                edges.setdefault(own, set()).add(imported)
    cycles = sorted(f"{a} <-> {b}" for a, targets in edges.items() for b in targets if a < b and a in edges.get(b, ()))
    assert cycles == []


@pytest.mark.parametrize("init", sorted(PACKAGE.rglob("__init__.py")), ids=lambda p: str(p.parent.name))
def test_every_package_declares_its_public_names(init: Path) -> None:
    """Each package ``__init__`` sets ``__all__``, and every name in it is bound there."""
    tree = ast.parse(init.read_text(encoding="utf-8"))
    declared: list[str] | None = None
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    bound.add(target.id)
                    if target.id == "__all__" and node.value is not None:
                        declared = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.ImportFrom):
            bound.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
    assert declared is not None, f"{init} has no __all__"
    assert set(declared) <= bound


def test_the_import_walk_sees_top_level_and_nested_imports() -> None:
    """The walk finds module-level imports and those inside functions (a guard against a walk that sees nothing)."""
    assert "errors" in {part for _, part in _imported_parts(PACKAGE / "settings.py")}
    parts = {part for _, part in _imported_parts(PACKAGE / "cli.py")}
    assert {"app", "ops", "messaging"} <= parts  # app and messaging are imported inside functions
