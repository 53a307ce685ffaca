"""The OpenAPI document of API version 1, served at ``/openapi.json``.

Body and event schemas are generated from the same msgspec Structs the code decodes and
encodes with, so the document cannot drift from the wire; only the paths are written out here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from broker.core.bodies import CancelState, ErrorBody, MessageAccepted, PostMessage, Snapshot
from broker.core.events import EVENT_TYPES, Reset, StreamError

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
_STREAM_ID = {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "malformed request (id, Last-Event-ID, JSON, header or query)",
        401: "no acceptable token (`unauthorized`; the message says which check failed), with "
        "`WWW-Authenticate: Bearer`",
        403: "`forbidden`: the token may read this conversation, not write to it",
        404: "unknown conversation or run; also any conversation the caller may not read",
        409: "state conflict",
        413: "body or content too large",
        422: "invalid field, unknown model, or an Idempotency-Key reused with another body",
        429: "a limit was reached (`rate_limited`, `too_many_streams`, `too_many_runs`, "
        "`too_many_conversations`); retry after Retry-After seconds",
        503: "Redis (or the token signing keys) unreachable; retry after Retry-After seconds",
    }
    return {str(s): _json(_ref("ErrorBody"), text[s]) for s in (*statuses, 503)}


def _guarded(*statuses: int) -> dict[str, Any]:
    """The errors of a route behind authentication and the per-subject limits."""
    return _errors(*sorted({*statuses, 401, 429}))


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


_LAST_EVENT_ID = [
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _STREAM_ID},
    {"name": "last_event_id", "in": "query", "required": False, "schema": _STREAM_ID},
]
_SSE = {
    "description": "an SSE stream; each event's `data` is one of the event schemas. A stream "
    "whose token expires ends with `event: error` (no `id:`) and a `StreamError` "
    '`{"code": "token_expired"}`: reconnect with a fresh token and the last event id.',
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "cookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "broker_token",
        "description": "set by POST /v1/session; GET requests only",
    },
    "query": {
        "type": "apiKey",
        "in": "query",
        "name": "access_token",
        "description": "GET requests only, when BROKER_JWT_QUERY_TOKEN is on",
    },
}
_READ_SECURITY = [{"bearer": []}, {"cookie": []}, {"query": []}]
_WRITE_SECURITY = [{"bearer": []}]
_NO_STORE = {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}}
_WAIT = {"name": "wait", "in": "query", "required": False, "schema": {"enum": ["true", "false", "1", "0"]}}


def build() -> dict[str, Any]:
    structs: list[Any] = [
        PostMessage, MessageAccepted, CancelState, Snapshot, ErrorBody, Reset, StreamError
    ]
    structs += list(EVENT_TYPES.values())
    _, components = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    cancel = {
        "202": _json(_ref("CancelState"), "the run was told to stop"),
        "200": _json(_ref("CancelState"), "the run has ended; its final status"),
        **_guarded(400, 403, 404, 409),
    }
    paths: dict[str, Any] = {
        "/healthz": {"get": {"operationId": "healthz", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "responses": {"200": {"description": "Redis answers"}, **_errors()},
            }
        },
        "/v1/session": {
            "post": {
                "operationId": "startSession",
                "description": "sets the HttpOnly session cookie to the Bearer token, for "
                "GET requests from a browser page",
                "security": _WRITE_SECURITY,
                "responses": {
                    "204": {"description": "the cookie is set", "headers": _NO_STORE},
                    **_guarded(),
                },
            },
            "delete": {
                "operationId": "endSession",
                "security": _WRITE_SECURITY,
                "responses": {
                    "204": {"description": "the cookie is cleared", "headers": _NO_STORE},
                    **_guarded(),
                },
            },
        },
        "/v1/conversations/{cid}": {
            "get": {
                "operationId": "getConversation",
                "parameters": [_path("cid")],
                "security": _READ_SECURITY,
                "responses": {
                    "200": {
                        **_json(_ref("Snapshot"), "the merged conversation"),
                        "headers": _NO_STORE,
                    },
                    **_guarded(400, 404),
                },
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
                "security": _WRITE_SECURITY,
                "responses": {
                    "202": _json(_ref("MessageAccepted"), "the message is stored and its run queued"),
                    **_guarded(400, 403, 404, 409, 413, 422),
                },
            }
        },
        "/v1/conversations/{cid}/stream": {
            "get": {
                "operationId": "streamConversation",
                "parameters": [_path("cid"), *_LAST_EVENT_ID],
                "security": _READ_SECURITY,
                "responses": {"200": _SSE, **_guarded(400, 404, 429)},
            }
        },
        "/v1/conversations/{cid}/runs/{run_id}/stream": {
            "get": {
                "operationId": "streamRun",
                "parameters": [_path("cid"), _path("run_id"), *_LAST_EVENT_ID],
                "security": _READ_SECURITY,
                "responses": {
                    "200": _SSE,
                    "204": {"description": "`active` and nothing runs"},
                    **_guarded(400, 404, 429),
                },
            }
        },
        "/v1/conversations/{cid}/cancel": {
            "post": {
                "operationId": "cancelActiveRun",
                "parameters": [_path("cid"), _WAIT],
                "security": _WRITE_SECURITY,
                "responses": cancel,
            }
        },
        "/v1/conversations/{cid}/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancelRun",
                "parameters": [_path("cid"), _path("run_id"), _WAIT],
                "security": _WRITE_SECURITY,
                "responses": cancel,
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "LLM stream broker", "version": "1"},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES},
    }


DOCUMENT: bytes = msgspec.json.encode(build())
