"""The OpenAPI document cannot drift from the code.

- Every live route of the application (whoever added it) is documented with exactly its
  methods, and every documented path is a live route.
- Every error code the source raises is in the document's table with its status.
- The stream union is exactly the event types of ``broker.core.events`` plus ``reset`` and
  ``error``, each frame's data schema is the struct's own, and real frames of a live stream
  validate against it.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest
from starlette.routing import Mount, Route

from broker.core.events import EVENT_TYPES
from broker.core.settings import Settings
from broker.front.app import create_app
from broker.front.openapi import DOCUMENT, ERROR_CODES, EVENT_NOTES, GENERIC_CODES
from tests.helpers import new_cid, terminal_of
from tests.stack import REPO_ROOT, Stack

DOC: dict[str, Any] = msgspec.json.decode(DOCUMENT)
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
    live = _live_operations(create_app(Settings(auth="none")).routes)
    documented = {
        (path, method)
        for path, item in DOC["paths"].items()
        for method in item
        if method in _HTTP_METHODS
    }
    assert live - documented == set(), "routes missing from the OpenAPI document"
    assert documented - live == set(), "documented operations that no route serves"


def _raised_codes() -> set[tuple[int, str]]:
    """(status, code) of every call in the source that builds an error from a literal status
    and code, whatever the helper is called (``ApiError``, ``error_response``, a protocol-level
    refusal): a new error path cannot slip past the document."""
    found: set[tuple[int, str]] = set()
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
                found.add((status.value, code.value))
    return found


def test_every_error_code_in_the_source_is_documented_with_its_status() -> None:
    raised = _raised_codes()
    assert len(raised) >= 15, "the scan must find the API's errors"
    missing = [
        (status, code)
        for status, code in sorted(raised)
        if code not in ERROR_CODES or status not in (0, ERROR_CODES[code][0])
    ]
    assert not missing, f"error codes raised but not documented (or with another status): {missing}"
    described = " ".join(
        response["description"]
        for item in DOC["paths"].values()
        for op in item.values()
        for response in op["responses"].values()
    )
    unnamed = {code for code in ERROR_CODES if f"`{code}`" not in described}
    assert unnamed <= set(GENERIC_CODES), f"documented codes no operation names: {unnamed}"
    assert all(f"`{code}`" in DOC["info"]["description"] for code in GENERIC_CODES)


def test_the_stream_union_is_every_event_type_plus_reset_and_error() -> None:
    mapping = SCHEMAS["ConversationEvent"]["discriminator"]["mapping"]
    assert set(mapping) == set(EVENT_TYPES) | {"reset", "error"}
    assert SCHEMAS["ConversationEvent"]["discriminator"]["propertyName"] == "event"
    assert set(SCHEMAS["RunEvent"]["discriminator"]["mapping"]) == set(mapping) - {"reset"}
    _, generated = msgspec.json.schema_components(
        list(EVENT_TYPES.values()), ref_template="#/components/schemas/{name}"
    )
    for name, struct in EVENT_TYPES.items():
        frame = SCHEMAS[mapping[name].rsplit("/", 1)[1]]
        assert frame["properties"]["event"] == {"const": name}
        assert frame["properties"]["data"] == {"$ref": f"#/components/schemas/{struct.__name__}"}
        assert "id" in frame["required"], f"{name} is stored: it has an id"
        assert SCHEMAS[struct.__name__] == generated[struct.__name__]
    assert set(EVENT_NOTES) == set(EVENT_TYPES), "each event type says what it means in /docs"
    for unstored in ("reset", "error"):
        assert "id" not in SCHEMAS[mapping[unstored].rsplit("/", 1)[1]]["properties"]
    for path in ("/v1/conversations/{cid}/stream", "/v1/conversations/{cid}/runs/{run_id}/stream"):
        content = DOC["paths"][path]["get"]["responses"]["200"]["content"]
        assert list(content) == ["text/event-stream"]


def _validator(name: str) -> Any:
    """A JSON Schema 2020-12 validator of one component, its references resolved in the document."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}
    return jsonschema_rs.Draft202012Validator(schema)


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_live_frames_and_answers_match_the_document(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    front = stack.fronts[0]
    cid = new_cid()
    run = await front.api.start_run(cid, "hi", tokens=5, interval_ms=1, reasoning_tokens=2)
    frames: list[dict[str, Any]] = []
    async with await front.api.stream(cid, last_event_id="1-0") as stream:  # reset first
        events = await stream.read_until(terminal_of(run["run_id"]))
    for event in events:
        frame: dict[str, Any] = {"event": event.event, "data": event.json()}
        if event.id is not None:
            frame["id"] = event.id
        frames.append(frame)
    assert frames[0]["event"] == "reset"
    conversation = _validator("ConversationEvent")
    for frame in frames:
        conversation.validate(frame)
    run_union = _validator("RunEvent")
    for frame in frames[1:]:
        run_union.validate(frame)
    with pytest.raises(jsonschema_rs.ValidationError):
        run_union.validate(frames[0])  # a run's stream never sends reset
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as client:
        _validator("ModelList").validate((await client.get("/v1/models")).json())
        _validator("Snapshot").validate((await client.get(f"/v1/conversations/{cid}")).json())
        _validator("ErrorBody").validate(
            (await client.get("/v1/conversations/x/runs/nope/stream")).json()
        )
