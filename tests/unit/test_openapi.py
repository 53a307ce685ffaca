"""The OpenAPI document cannot drift from the code.

- Every live route of the application (whoever added it) is documented with exactly its
  methods, and every documented path is a live route.
- Every error the source raises names a code of the registry, never a status and a string of
  its own, and every code of the registry is named by some operation or in the description.
- The stream union is exactly the event types of ``broker.core.events`` plus ``reset`` and
  ``error``, and each frame's data schema is the struct's own (real frames of a live stream
  validate against it: ``tests/e2e/test_openapi_frames.py``).
"""

from __future__ import annotations

import ast
import re
from typing import Any

import msgspec
from starlette.routing import Mount, Route

from broker.core.errors import REGISTRY
from broker.core.events import EVENT_TYPES
from broker.core.settings import Settings
from broker.front.app import create_app
from broker.front.openapi import BEFORE_ANY_ROUTE
from tests.stack import REPO_ROOT

APP = create_app(Settings(auth="none"))
DOC: dict[str, Any] = msgspec.json.decode(APP.state.openapi)
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]
_HTTP_METHODS = {"get", "post", "put", "patch", "delete", "options", "head"}


def _live_operations(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            found |= _live_operations(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", prefix + route.path)
            methods = (route.methods or {"GET"}) - {"HEAD"}  # Starlette adds HEAD to GET
            found |= {(path, method.lower()) for method in methods}
        else:
            found.add((getattr(route, "path", repr(route)), "?"))
    return found


def test_every_live_route_is_documented_and_every_documented_path_is_live() -> None:
    live = _live_operations(APP.routes)
    documented = {
        (path, method)
        for path, item in DOC["paths"].items()
        for method in item
        if method in _HTTP_METHODS
    }
    assert live - documented == set(), "routes missing from the OpenAPI document"
    assert documented - live == set(), "documented operations that no route serves"


def _literal_errors() -> list[str]:
    """Calls in the source that build an error from a literal status and code, whatever the
    helper is called: an error path that bypasses the registry."""
    found: list[str] = []
    for path in (REPO_ROOT / "broker").rglob("*.py"):
        if path.parent.name in ("client", "cli"):
            continue  # what the server answers, not what its clients make of it
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            status, code = node.args[0], node.args[1]
            if (
                isinstance(status, ast.Constant)
                and isinstance(status.value, int)
                and 400 <= status.value < 600
                and isinstance(code, ast.Constant)
                and isinstance(code.value, str)
                and re.fullmatch(r"[a-z][a-z_]+", code.value)
            ):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    return found


def _named_codes() -> set[str]:
    """The registry's codes the source names (``ApiError(RUN_ACTIVE, ...)`` and the like)."""
    constants = {code.name.upper(): code.name for code in REGISTRY.values()}
    named: set[str] = set()
    for path in (REPO_ROOT / "broker").rglob("*.py"):
        if path.name == "errors.py" and path.parent.name == "core":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = getattr(node, "id", None) or getattr(node, "attr", None)
            if name in constants:
                named.add(constants[name])
    return named


def test_every_error_comes_from_the_registry_and_is_documented() -> None:
    assert _literal_errors() == [], "errors built from a literal status and code"
    assert len(REGISTRY) >= 50 and len(_named_codes()) >= 50, "the scan must see the codes"
    assert _named_codes() == set(REGISTRY), "registry codes nothing raises, or the reverse"
    described = " ".join(
        response["description"]
        for item in DOC["paths"].values()
        for op in item.values()
        for response in op["responses"].values()
    )
    generic = {code.name for code in BEFORE_ANY_ROUTE}
    unnamed = {code for code in REGISTRY if f"`{code}`" not in described}
    assert unnamed <= generic, f"documented codes no operation names: {unnamed}"
    assert all(f"`{code}`" in DOC["info"]["description"] for code in generic)
    for item in DOC["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                for code in re.findall(r"`([a-z_]+)`:", response["description"]):
                    assert REGISTRY[code].status == int(status), (code, status)


def test_the_stream_union_is_every_event_type_plus_reset_and_error() -> None:
    mapping = SCHEMAS["ConversationEvent"]["discriminator"]["mapping"]
    assert set(mapping) == set(EVENT_TYPES) | {"reset", "error"}
    assert SCHEMAS["ConversationEvent"]["discriminator"]["propertyName"] == "event"
    # A run's stream sends reset too, when the position asked for is not the conversation's.
    assert set(SCHEMAS["RunEvent"]["discriminator"]["mapping"]) == set(mapping)
    _, generated = msgspec.json.schema_components(
        list(EVENT_TYPES.values()), ref_template="#/components/schemas/{name}"
    )
    for name, struct in EVENT_TYPES.items():
        frame = SCHEMAS[mapping[name].rsplit("/", 1)[1]]
        assert frame["properties"]["event"] == {"const": name}
        assert frame["properties"]["data"] == {"$ref": f"#/components/schemas/{struct.__name__}"}
        assert "id" in frame["required"], f"{name} is stored: it has an id"
        assert SCHEMAS[struct.__name__] == generated[struct.__name__]
    for name in EVENT_TYPES:
        frame = SCHEMAS[mapping[name].rsplit("/", 1)[1]]
        assert frame["description"], f"{name}: each event type says what it means in /docs"
    for unstored in ("reset", "error"):
        assert "id" not in SCHEMAS[mapping[unstored].rsplit("/", 1)[1]]["properties"]
    for path in ("/v1/conversations/{cid}/stream", "/v1/conversations/{cid}/runs/{run_id}/stream"):
        content = DOC["paths"][path]["get"]["responses"]["200"]["content"]
        assert list(content) == ["text/event-stream"]
