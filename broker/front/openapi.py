"""The OpenAPI document of API version 1, served at ``/openapi.json``.

Body and event schemas are generated from the same msgspec Structs the code decodes and
encodes with, so the document cannot drift from the wire; only the paths are written out here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from broker.core.bodies import CancelState, ErrorBody, MessageAccepted, PostMessage, Snapshot
from broker.core.events import EVENT_TYPES, Reset

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
_STREAM_ID = {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "malformed request (id, Last-Event-ID, JSON, header or query)",
        404: "unknown conversation or run",
        409: "state conflict",
        413: "body or content too large",
        422: "invalid field, unknown model, or an Idempotency-Key reused with another body",
        429: "too many open streams of this conversation on this front; retry after Retry-After",
        503: "Redis unreachable; retry after Retry-After seconds",
    }
    return {str(s): _json(_ref("ErrorBody"), text[s]) for s in (*statuses, 503)}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


_LAST_EVENT_ID = [
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _STREAM_ID},
    {"name": "last_event_id", "in": "query", "required": False, "schema": _STREAM_ID},
]
_SSE = {
    "description": "an SSE stream; each event's `data` is one of the event schemas",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
_WAIT = {"name": "wait", "in": "query", "required": False, "schema": {"enum": ["true", "false", "1", "0"]}}


def build() -> dict[str, Any]:
    structs: list[Any] = [PostMessage, MessageAccepted, CancelState, Snapshot, ErrorBody, Reset]
    structs += list(EVENT_TYPES.values())
    _, components = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    cancel = {
        "202": _json(_ref("CancelState"), "the run was told to stop"),
        "200": _json(_ref("CancelState"), "the run has ended; its final status"),
        **_errors(400, 404, 409),
    }
    paths: dict[str, Any] = {
        "/healthz": {"get": {"operationId": "healthz", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "responses": {"200": {"description": "Redis answers"}, **_errors()},
            }
        },
        "/v1/conversations/{cid}": {
            "get": {
                "operationId": "getConversation",
                "parameters": [_path("cid")],
                "responses": {"200": _json(_ref("Snapshot"), "the merged conversation"), **_errors(400, 404)},
            }
        },
        "/v1/conversations/{cid}/messages": {
            "post": {
                "operationId": "postMessage",
                "parameters": [
                    _path("cid"),
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PostMessage")}},
                },
                "responses": {
                    "202": _json(_ref("MessageAccepted"), "the message is stored and its run queued"),
                    **_errors(400, 409, 413, 422),
                },
            }
        },
        "/v1/conversations/{cid}/stream": {
            "get": {
                "operationId": "streamConversation",
                "parameters": [_path("cid"), *_LAST_EVENT_ID],
                "responses": {"200": _SSE, **_errors(400, 404, 429)},
            }
        },
        "/v1/conversations/{cid}/runs/{run_id}/stream": {
            "get": {
                "operationId": "streamRun",
                "parameters": [_path("cid"), _path("run_id"), *_LAST_EVENT_ID],
                "responses": {
                    "200": _SSE,
                    "204": {"description": "`active` and nothing runs"},
                    **_errors(400, 404, 429),
                },
            }
        },
        "/v1/conversations/{cid}/cancel": {
            "post": {
                "operationId": "cancelActiveRun",
                "parameters": [_path("cid"), _WAIT],
                "responses": cancel,
            }
        },
        "/v1/conversations/{cid}/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancelRun",
                "parameters": [_path("cid"), _path("run_id"), _WAIT],
                "responses": cancel,
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "LLM stream broker", "version": "1"},
        "paths": paths,
        "components": {"schemas": components},
    }


DOCUMENT: bytes = msgspec.json.encode(build())
