"""The architecture, checked from the source: which package may import which, and who speaks Redis.

- ``broker.core`` is pure and shared: no I/O library, and none of the packages built on it.
- ``broker.engine`` is the only code that speaks Redis: no other module imports ``redis`` or
  calls a Redis command, and no ``.py`` file holds Lua (the scripts are ``.lua`` files beside
  the engine). The embedded ``redis-server`` launcher runs a server and sends no command.
- ``broker.protocols`` are pure translations: the core and nothing else of the broker.
- ``broker.front`` reads top to bottom: HTTP plumbing, then security, streaming, actions,
  routes, and the app that assembles them; no layer imports one above it.
- ``workers`` know the core and the engine, never the front; only the ``broker`` command
  (``broker.cli``) knows both tiers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.stack import REPO_ROOT

ENGINE = "broker.engine"
# Allowed to import redis-py without being the engine: the server launcher, which pings the
# redis-server it started.
REDIS_IMPORT_ALLOWED = ("broker.embedded_redis",)

# For each package (by dotted prefix), the packages its modules must not import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "broker.core": (
        "redis",
        "starlette",
        "uvicorn",
        "httpx",
        ENGINE,
        "broker.protocols",
        "broker.front",
        "broker.client",
        "broker.cli",
        "workers",
    ),
    ENGINE: ("starlette", "uvicorn", "broker.protocols", "broker.front", "broker.cli", "workers"),
    "broker.protocols": (
        "redis",
        "starlette",
        "httpx",
        ENGINE,
        "broker.front",
        "broker.client",
        "broker.cli",
        "workers",
    ),
    "broker.front": ("workers", "broker.cli", "broker.client"),
    "broker.client": (ENGINE, "broker.front", "broker.protocols", "broker.cli", "workers"),
    "workers": ("broker.front", "broker.protocols", "broker.client", "broker.cli"),
}
# Modules exempt from one rule, with the reason.
EXEMPT: dict[str, tuple[str, ...]] = {
    # The tap's public import path re-exports the engine's Tap (it reads Redis).
    "broker.client.tap": (ENGINE,),
}

# The front's layers, lowest first: a module may import its own layer and those below.
FRONT_LAYERS = (
    "broker.front.http",
    "broker.front.security",
    "broker.front.streaming",
    "broker.front.actions",
    "broker.front.routes",
    "broker.front.openapi",
    "broker.front.app",
)

# Redis commands as redis-py names them, distinctive enough that a call of one outside the
# engine can only be a Redis command (``get``, ``set`` or ``delete`` would be any dict's).
REDIS_COMMANDS = frozenset(
    """
    xadd xrange xrevrange xread xreadgroup xack xdel xlen xautoclaim xclaim xpending
    xgroup_create xinfo_stream xinfo_groups xtrim hget hgetall hmget hset hsetnx hdel hkeys
    hexists hincrby zadd zrem zcard zscore zrange zrevrangebyscore zrangebyscore
    zremrangebyscore sadd srem smembers pexpire pexpireat expire incr scan_iter publish
    spublish pipeline register_script evalsha execute_command config_get client_list
    """.split()
)
_LUA = re.compile(r"redis\.call\(|redis\.pcall\(")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST) -> set[str]:
    """Every absolute module name the file imports, at any depth (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
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
TREES = {_module_name(path): ast.parse(path.read_text(), str(path)) for path in SOURCES}


def test_no_import_crosses_a_layer() -> None:
    crossings: list[str] = []
    for module, tree in TREES.items():
        rules = [banned for package, banned in FORBIDDEN.items() if _within(module, package)]
        exempt = EXEMPT.get(module, ())
        crossings += [
            f"{module} imports {name}"
            for name in sorted(_imports(tree))
            for banned in rules
            for package in banned
            if _within(name, package) and package not in exempt
        ]
    assert not crossings, "\n".join(crossings)


def test_only_the_engine_imports_redis() -> None:
    found = [
        f"{module} imports {name}"
        for module, tree in TREES.items()
        if not _within(module, ENGINE) and module not in REDIS_IMPORT_ALLOWED
        for name in sorted(_imports(tree))
        if _within(name, "redis")
    ]
    assert not found, "\n".join(found)


def test_only_the_engine_sends_redis_commands() -> None:
    found = []
    for module, tree in TREES.items():
        if _within(module, ENGINE) or module in REDIS_IMPORT_ALLOWED:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in REDIS_COMMANDS
            ):
                found.append(f"{module}:{node.lineno} calls .{node.func.attr}()")
    assert not found, "\n".join(found)


def test_no_python_file_holds_lua() -> None:
    holding = [
        str(path.relative_to(REPO_ROOT)) for path in SOURCES if _LUA.search(path.read_text())
    ]
    assert not holding, "Lua belongs in .lua files: " + ", ".join(holding)
    scripts = list((REPO_ROOT / "broker" / "engine" / "lua").glob("*.lua"))
    assert scripts, "the engine's scripts live in broker/engine/lua/*.lua"


def test_the_front_reads_top_to_bottom() -> None:
    upward: list[str] = []
    for module, tree in TREES.items():
        layer = next((i for i, p in enumerate(FRONT_LAYERS) if _within(module, p)), None)
        if layer is None:
            continue
        for name in sorted(_imports(tree)):
            for higher in FRONT_LAYERS[layer + 1 :]:
                if _within(name, higher):
                    upward.append(f"{module} imports {name}")
    assert not upward, "\n".join(upward)


def test_the_rules_see_every_layer() -> None:
    """A check that cannot fail is no check: the walk must find modules of every layer, and
    the command list must name what the engine really calls."""
    modules = set(TREES)
    for package in ("broker.core", ENGINE, "broker.protocols", *FRONT_LAYERS, "workers"):
        assert any(_within(m, package) for m in modules), package
    engine_calls = {
        node.func.attr
        for module, tree in TREES.items()
        if _within(module, ENGINE)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert {"xadd", "xrange", "pipeline", "hget"} <= engine_calls & REDIS_COMMANDS
