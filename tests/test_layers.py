"""The package layers, checked from the source: no import runs back up or across.

``broker.core`` is shared by both tiers and knows neither; ``workers`` knows only the core; the
front tier and the protocol translations (``broker.protocols``) never load the worker runtime.
Only the ``broker`` command
(``broker.cli``) may know both tiers. A violation would make a front process import model
providers, or a worker import Starlette, and would let the layers grow into each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.stack import REPO_ROOT

# For each package (by dotted prefix), the packages its modules must not import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "broker.core": ("broker.front", "broker.protocols", "broker.client", "broker.cli", "workers"),
    "broker.engine": ("broker.front", "broker.cli", "workers"),
    "broker.front": ("workers", "broker.cli", "broker.client"),
    "broker.protocols": ("workers", "broker.cli", "broker.client"),
    "broker.client": ("workers", "broker.front", "broker.protocols", "broker.cli"),
    "workers": ("broker.front", "broker.protocols", "broker.client", "broker.cli"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every absolute module name the file imports, at any depth (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


SOURCES = sorted(
    path for root in ("broker", "workers") for path in (REPO_ROOT / root).rglob("*.py")
)


def test_no_import_crosses_a_layer() -> None:
    crossings: list[str] = []
    for path in SOURCES:
        module = _module_name(path)
        rules = [banned for package, banned in FORBIDDEN.items() if _within(module, package)]
        crossings += [
            f"{module} imports {name}"
            for name in sorted(_imports(path))
            if any(_within(name, package) for banned in rules for package in banned)
        ]
    assert not crossings, "\n".join(crossings)


def test_the_rules_see_every_layer() -> None:
    """A check that cannot fail is no check: the walk must find modules of every layer."""
    modules = {_module_name(path) for path in SOURCES}
    for package in ("broker.core", "broker.engine", "broker.front", "broker.protocols", "workers"):
        assert any(_within(m, package) for m in modules), package
