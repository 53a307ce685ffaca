"""The OpenAPI 3.1 document of API version 1, served at ``/openapi.json`` and shown at ``/docs``.

Body and event schemas are generated from the same msgspec Structs the code decodes and
encodes with, and the event streams are described as the union of the event frames keyed by
the event name (``event``), built from ``broker.core.events.EVENT_TYPES``: a new event type is
in the document as soon as it exists. Only the paths, their summaries and the error codes each
one can answer are written out here; ``tests/test_openapi.py`` checks those against the live
routes and the error codes raised in the source, so neither can drift.
"""

from __future__ import annotations

from typing import Any

import msgspec

from broker.core.bodies import (
    CancelState,
    ConversationPage,
    ErrorBody,
    MessageAccepted,
    ModelList,
    PostMessage,
    Snapshot,
)
from broker.core.events import EVENT_TYPES, Reset, StreamError

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
_STREAM_ID = {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"}

# Every error code the API answers with, its status, and when. The body is always ErrorBody.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_id": (400, "an identifier in the path does not match [A-Za-z0-9_-]{1,128}"),
    "invalid_last_event_id": (400, "Last-Event-ID (or ?last_event_id=) is not an event id"),
    "malformed_json": (400, "the body is not JSON, or not a JSON object"),
    "malformed_request": (400, "the request is not valid HTTP/1.1; the connection is closed"),
    "invalid_idempotency_key": (400, "Idempotency-Key is not 1 to 255 visible ASCII characters"),
    "invalid_query": (400, "a query parameter has a value it cannot take"),
    "invalid_cursor": (400, "cursor is not a next_cursor this API returned"),
    "cors_refused": (400, "a CORS preflight from an origin not in BROKER_CORS_ORIGINS"),
    "client_disconnected": (400, "the client left before its body arrived; nobody reads this"),
    "unauthorized": (401, "no acceptable token; the message says which check failed"),
    "forbidden": (403, "the token may read this conversation, not write to it"),
    "conversation_not_found": (404, "no such conversation, or none the token may see"),
    "run_not_found": (404, "no such run in this conversation"),
    "not_found": (404, "no such endpoint or file"),
    "method_not_allowed": (405, "the endpoint does not take this method"),
    "request_timeout": (408, "the request headers took too long to arrive"),
    "run_active": (409, "a run of this conversation has not finished"),
    "no_active_run": (409, "nothing runs in this conversation"),
    "body_too_large": (413, "the body exceeds BROKER_MAX_BODY_BYTES"),
    "content_too_large": (413, "content exceeds BROKER_MAX_CONTENT_CHARS characters"),
    "unsupported_media_type": (415, "the body is not sent as Content-Type: application/json"),
    "headers_too_large": (431, "the request headers are too large or too many"),
    "invalid_field": (422, "a field of the body has a wrong type or value, or is unknown"),
    "unknown_model": (422, "the model is not in the catalogue"),
    "idempotency_key_reused": (422, "this Idempotency-Key was used with another body"),
    "too_many_streams": (429, "too many open streams (this conversation, or this subject)"),
    "rate_limited": (429, "too many requests or posts of this subject per minute"),
    "too_many_runs": (429, "too many runs of this subject at once"),
    "too_many_conversations": (429, "too many conversations created by this subject today"),
    "internal_error": (500, "an unexpected server error (a defect: please report it)"),
    "http_error": (500, "any other HTTP error, with its own status"),
    "redis_unavailable": (503, "the store is unreachable; see Retry-After"),
    "try_again": (503, "the run could not be queued in time; see Retry-After"),
    "auth_unavailable": (503, "the token signing keys (JWKS) could not be fetched"),
    # Durable Streams (/v1/stream/...)
    "invalid_stream_name": (400, "a stream name is 1 to 1024 characters of non-empty segments"),
    "invalid_ttl": (400, "Stream-TTL is not a whole number of seconds"),
    "invalid_expires_at": (400, "Stream-Expires-At is not an RFC 3339 time with a zone"),
    "invalid_expiry": (400, "both Stream-TTL and Stream-Expires-At were given"),
    "invalid_offset": (400, "offset is not -1, now, or an offset this server sent"),
    "invalid_live": (400, "live is not long-poll or sse"),
    "missing_offset": (400, "a live read without an offset"),
    "invalid_producer": (
        400,
        "Producer-Id/-Epoch/-Seq incomplete, malformed, or a new epoch not starting at 0",
    ),
    "empty_body": (400, "an append without a body and without Stream-Closed: true"),
    "empty_array": (400, "an append of an empty JSON array to a JSON stream"),
    "missing_content_type": (400, "an append with a body and no Content-Type"),
    "stale_producer_epoch": (403, "a newer Producer-Epoch exists (see the Producer-Epoch header)"),
    "stream_not_found": (404, "no such stream, or none the token may see"),
    "stream_exists": (409, "the stream exists with another configuration"),
    "stream_closed": (409, "the stream is closed (Stream-Closed: true, Stream-Next-Offset)"),
    "content_type_mismatch": (409, "the body's Content-Type is not the stream's"),
    "sequence_conflict": (409, "Stream-Seq is not above the last one"),
    "invalid_seq": (400, "Stream-Seq is longer than 255 characters"),
    "producer_sequence_gap": (409, "a Producer-Seq is missing (Producer-Expected-Seq)"),
    "offset_gone": (410, "retention dropped the data past this offset"),
    "invalid_fork": (400, "Stream-Fork-(Sub-)Offset without Stream-Forked-From, or no source"),
    "invalid_sub_offset": (
        400,
        "Stream-Fork-Sub-Offset malformed, without an offset, or past the next append",
    ),
    "source_deleted": (409, "the fork's source was deleted (forks of it still live)"),
    "stream_gone": (410, "the stream was deleted while forks of it live"),
}
# What posting a message may answer, through the v1 API or the AI SDK adapter (one code path).
_POST_MESSAGE_ERRORS = (
    "invalid_id",
    "malformed_json",
    "invalid_idempotency_key",
    "forbidden",
    "conversation_not_found",
    "run_active",
    "body_too_large",
    "unsupported_media_type",
    "content_too_large",
    "invalid_field",
    "unknown_model",
    "idempotency_key_reused",
    "too_many_runs",
    "too_many_conversations",
    "try_again",
)
# Any request may meet these.
_ALWAYS = ("redis_unavailable", "internal_error")
# And any request behind authentication and the per-subject limits, these.
_GUARDED = ("unauthorized", "rate_limited", "auth_unavailable")
# What each stored event means to a client; a new event type needs a line here (tested).
EVENT_NOTES: dict[str, str] = {
    "message": "the user's message; its run (`run_id`) starts",
    "run.started": "a worker began the answer `message_id` with `model`",
    "delta": "a piece of the answer (`channel: content`) or of the reasoning (`reasoning`)",
    "tool.call": "a tool call: its arguments' JSON text in pieces (`arguments_delta`), then "
    "once whole (`arguments`); the broker never runs it",
    "tool.result": "what a tool call gave back (`result`, any JSON), `is_error` when it failed",
    "data": "a named piece of structured output (`name`, `value`): citations, progress, UI state",
    "run.completed": "the answer is complete: `finish_reason`, and `usage` when known",
    "run.cancelled": "the run was stopped by a cancel; the partial answer stays",
    "run.failed": "the run ended with an error (`error.code`, `error.message`)",
}
# Events that are sent but never stored: they carry no ``id:``.
_UNSTORED_EVENTS: dict[str, tuple[type[msgspec.Struct], str]] = {
    "reset": (
        Reset,
        "Sent first, before any stored event, when the position asked for was trimmed away "
        "(`trimmed`) or is no position of this conversation (`unknown_position`): drop what "
        "you have; the replay of everything retained follows.",
    ),
    "error": (
        StreamError,
        "The stream cannot go on; it ends after this frame. `token_expired`: resume with a "
        "fresh token and the last id received; `conversation_deleted`: the conversation was "
        "deleted, do not reconnect; `conversation_not_found`: a stream that waited for a new "
        "conversation, which another subject created first.",
    ),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    """Error responses grouped by status, each naming the codes it can carry."""
    by_status: dict[int, list[str]] = {}
    for code in (*codes, *_ALWAYS):
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    return {
        str(status): _json(
            _ref("ErrorBody"),
            "; ".join(f"`{code}`: {ERROR_CODES[code][1]}" for code in of_status),
        )
        for status, of_status in sorted(by_status.items())
    }


def _guarded(*codes: str) -> dict[str, Any]:
    """The errors of a route behind authentication and the per-subject limits."""
    return _errors(*codes, *_GUARDED)


# Reads accept the session cookie (EventSource cannot set headers); writes need the header.
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


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID, "description": description}


_CID = _path("cid", "the conversation: any id the client chooses; the first message creates it")
_RUN = _path("run_id", "a run id from `POST .../messages` or `run.started`, or `active`")
_LAST_EVENT_ID = [
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "schema": _STREAM_ID,
        "description": "resume after this event id (exclusive); wins over the query",
    },
    {
        "name": "last_event_id",
        "in": "query",
        "required": False,
        "schema": _STREAM_ID,
        "description": "the same, for a fresh `EventSource`, which cannot set headers",
    },
]
_WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "schema": {"enum": ["true", "false", "1", "0"]},
    "description": "wait (bounded) for the run's terminal event and answer 200 with it",
}


def _sse(union: str, description: str) -> dict[str, Any]:
    return {
        "description": description
        + " Each event is one frame of `"
        + union
        + "`, keyed by its `event` name; `retry:` lines and `: keepalive` comments come between.",
        "content": {"text/event-stream": {"schema": _ref(union)}},
    }


def _frame(name: str, struct: str, description: str, *, stored: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"event": {"const": name}, "data": _ref(struct)}
    required = ["event", "data"]
    if stored:
        properties = {
            "id": {**_STREAM_ID, "description": "its Redis Stream entry id"},
            **properties,
        }
        required.insert(0, "id")
    return {
        "type": "object",
        "title": f"event: {name}",
        "description": description,
        "properties": properties,
        "required": required,
    }


def _frame_name(event: str) -> str:
    return "".join(part.capitalize() for part in event.replace("_", ".").split(".")) + "Frame"


def _stream_unions() -> dict[str, Any]:
    """The frame schemas and the two stream unions (a run's stream never sends ``reset``)."""
    frames: dict[str, dict[str, Any]] = {}
    for name, struct in EVENT_TYPES.items():
        note = EVENT_NOTES.get(name, f"a stored `{name}` event")
        frames[name] = _frame(name, struct.__name__, note, stored=True)
    for name, (struct, doc) in _UNSTORED_EVENTS.items():
        frames[name] = _frame(name, struct.__name__, doc, stored=False)
    schemas = {_frame_name(name): frame for name, frame in frames.items()}

    def union(names: list[str], description: str) -> dict[str, Any]:
        return {
            "description": description,
            "oneOf": [_ref(_frame_name(name)) for name in names],
            "discriminator": {
                "propertyName": "event",
                "mapping": {name: f"#/components/schemas/{_frame_name(name)}" for name in names},
            },
        }

    schemas["ConversationEvent"] = union(
        list(frames), "An event of a conversation's stream, keyed by its name."
    )
    schemas["RunEvent"] = union(
        [name for name in frames if name != "reset"], "An event of one run's stream."
    )
    return schemas


def _static(media_type: str, description: str, operation: str, summary: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation,
            "tags": ["pages"],
            "summary": summary,
            "responses": {
                "200": {
                    "description": description,
                    "content": {media_type: {"schema": {"type": "string"}}},
                },
                "304": {"description": "unchanged since the ETag sent in If-None-Match"},
                **_errors(),
            },
        }
    }


_DESCRIPTION = """\
A durable, resumable stream broker for LLM token streams. A client posts a message, which
starts a run in a background worker; the run's events are stored in the conversation's stream
and served over Server-Sent Events from any front process. Render the snapshot
(`GET /v1/conversations/{cid}`), then stream after its `last_event_id`; after a disconnect,
reconnect with the last `id:` received: nothing is lost or repeated. Closing a stream never
stops a run; only `POST .../cancel` does, from any device.

Every error is `{"error": {"code", "message"}}`; each response below names the codes it can
carry. Any path may also answer `not_found` (404, no such endpoint), `method_not_allowed`
(405), `cors_refused` (400, a CORS preflight from an origin that is not allowed),
`malformed_request` (400, not valid HTTP/1.1), `request_timeout` (408) and
`headers_too_large` (431) before any route, or, for any other HTTP
error, `http_error` with the status that fits. (`client_disconnected` is written for a client
that already left.)
"""
# Codes any path may answer, named in the description above rather than on each operation.
GENERIC_CODES = (
    "not_found",
    "method_not_allowed",
    "cors_refused",
    "malformed_request",
    "request_timeout",
    "headers_too_large",
    "client_disconnected",
    "http_error",
)


_UI_STREAM = {
    "description": "The AI SDK's UI message stream (header `x-vercel-ai-ui-message-stream: "
    "v1`): one `data: <chunk JSON>` line per chunk (`start`, `text-delta`, `tool-input-"
    "available`, `finish`, ...), ending with `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
_CHAT_REQUEST = {
    "type": "object",
    "description": "What the AI SDK's `DefaultChatTransport` posts; the last user message's "
    "text parts are the prompt, the broker keeps the history. `model` and `params` may be "
    "added through the transport's `body`.",
    "properties": {
        "id": {**_ID, "description": "the chat id: the conversation id"},
        "messages": {"type": "array", "items": {"type": "object"}},
        "trigger": {"enum": ["submit-message", "regenerate-message"]},
        "messageId": {"type": "string"},
        "model": {"type": "string", "default": "simulated"},
        "params": {"type": "object"},
    },
    "required": ["id", "messages"],
}
_UI_MESSAGES = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "role": {"type": "string"},
            "parts": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["id", "role", "parts"],
    },
}


def _ai_sdk_paths(cancel_responses: dict[str, Any]) -> dict[str, Any]:
    """The AI SDK adapter's routes (``broker.front.routes.ai_sdk``)."""
    chat_cid = _path("cid", "the chat id, which is the conversation id")
    return {
        "/v1/ai-sdk/chat": {
            "post": {
                "operationId": "aiSdkChat",
                "tags": ["ai-sdk"],
                "summary": "Send the chat's last user message; answers with its run's UI stream",
                "description": "Closing this response only stops reading: the run goes on.",
                "security": _WRITE_SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _CHAT_REQUEST}},
                },
                "responses": {
                    "200": _UI_STREAM,
                    **_guarded(*_POST_MESSAGE_ERRORS),
                },
            }
        },
        "/v1/ai-sdk/chat/{cid}/stream": {
            "get": {
                "operationId": "aiSdkResume",
                "tags": ["ai-sdk"],
                "summary": "The active run's answer from its start, then live (`resume: true`)",
                "parameters": [chat_cid],
                "security": _READ_SECURITY,
                "responses": {
                    "200": _UI_STREAM,
                    "204": {"description": "nothing is being generated in this chat"},
                    **_guarded("invalid_id", "too_many_streams"),
                },
            }
        },
        "/v1/ai-sdk/chat/{cid}/stop": {
            "post": {
                "operationId": "aiSdkStop",
                "tags": ["ai-sdk"],
                "summary": "Stop the chat's active run (the v1 cancel)",
                "parameters": [chat_cid, _WAIT],
                "security": _WRITE_SECURITY,
                "responses": cancel_responses,
            }
        },
        "/v1/ai-sdk/chat/{cid}/messages": {
            "get": {
                "operationId": "aiSdkMessages",
                "tags": ["ai-sdk"],
                "summary": "The conversation as the AI SDK's `UIMessage[]`",
                "parameters": [chat_cid],
                "security": _READ_SECURITY,
                "responses": {
                    "200": {**_json(_UI_MESSAGES, "the messages"), "headers": _NO_STORE},
                    **_guarded("invalid_id"),
                },
            }
        },
    }


_DS_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the stream's name: one or more path segments",
}
_DS_READ = [
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "`-1` (the start, the default), `now` (the tail), or a Stream-Next-Offset",
    },
    {
        "name": "live",
        "in": "query",
        "required": False,
        "schema": {"enum": ["long-poll", "sse"]},
        "description": "wait for data (long-poll) or stream it (Server-Sent Events)",
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "the last Stream-Cursor, echoed",
    },
]
# Any bytes: JSON in a JSON-mode stream (or a conversation read as one), anything otherwise.
_DS_BYTES: dict[str, Any] = {"*/*": {"schema": {}}}


def _ds_read(
    operation: str, summary: str, parameter: dict[str, Any], *codes: str
) -> dict[str, Any]:
    return {
        "operationId": operation,
        "parameters": [parameter, *_DS_READ],
        "tags": ["durable-streams"],
        "summary": summary,
        "description": "Catch-up (200, data from the offset; Stream-Next-Offset, "
        "Stream-Up-To-Date, Stream-Closed, ETag), long-poll (200, or 204 when the wait "
        "ends with nothing) or SSE (`data` and `control` events). HEAD answers the metadata "
        "alone: Content-Type, Stream-Next-Offset, Stream-TTL or Stream-Expires-At, "
        "Stream-Closed, with Cache-Control: no-store.",
        "security": _READ_SECURITY,
        "responses": {
            "200": {
                "description": "data from the offset, or an SSE stream",
                "content": {**_DS_BYTES, "text/event-stream": {"schema": {"type": "string"}}},
            },
            "204": {"description": "long-poll: nothing arrived in time, or the stream is closed"},
            "304": {"description": "unchanged since the ETag sent in If-None-Match"},
            **_guarded(
                "invalid_offset",
                "invalid_live",
                "missing_offset",
                "offset_gone",
                "too_many_streams",
                *codes,
            ),
        },
    }


def _ds_read_only(operation: str) -> dict[str, Any]:
    return {
        "operationId": operation,
        "parameters": [_CID],
        "tags": ["durable-streams"],
        "summary": "Refused: a conversation's stream is written by posting messages",
        "security": _WRITE_SECURITY,
        "responses": _guarded("invalid_id", "method_not_allowed", "conversation_not_found"),
    }


def _durable_paths() -> dict[str, Any]:
    """The Durable Streams protocol (README, Durable Streams); headers as its PROTOCOL.md says."""
    missing = "stream_not_found"
    return {
        "/v1/stream/conversations/{cid}": {
            "get": _ds_read(
                "readConversationStream",
                "A conversation as a read-only JSON stream",
                _CID,
                "invalid_id",
                "forbidden",
                "conversation_not_found",
                "stream_not_found",
            ),
            "put": _ds_read_only("createConversationStream"),
            "post": _ds_read_only("appendConversationStream"),
            "delete": _ds_read_only("deleteConversationStream"),
        },
        "/v1/stream/{name}": {
            "put": {
                "operationId": "createStream",
                "parameters": [_DS_NAME],
                "tags": ["durable-streams"],
                "summary": "Create a stream (Content-Type, Stream-TTL or Stream-Expires-At, "
                "Stream-Closed, an optional first body), or fork one (Stream-Forked-From, "
                "Stream-Fork-Offset, Stream-Fork-Sub-Offset)",
                "security": _WRITE_SECURITY,
                "requestBody": {"required": False, "content": _DS_BYTES},
                "responses": {
                    "201": {"description": "created; Location, Stream-Next-Offset"},
                    "200": {"description": "it existed with the same configuration"},
                    **_guarded(
                        "invalid_stream_name",
                        "invalid_ttl",
                        "invalid_expires_at",
                        "invalid_expiry",
                        "malformed_json",
                        "body_too_large",
                        "content_too_large",
                        missing,
                        "stream_exists",
                        "not_found",
                        "invalid_fork",
                        "invalid_sub_offset",
                        "invalid_offset",
                        "source_deleted",
                        "content_type_mismatch",
                    ),
                },
            },
            "post": {
                "operationId": "appendStream",
                "parameters": [_DS_NAME],
                "tags": ["durable-streams"],
                "summary": "Append (Stream-Seq, Producer-Id/-Epoch/-Seq) and/or close "
                "(Stream-Closed: true)",
                "security": _WRITE_SECURITY,
                "requestBody": {"required": False, "content": _DS_BYTES},
                "responses": {
                    "200": {"description": "appended by an idempotent producer"},
                    "204": {"description": "appended, closed, or a producer's duplicate"},
                    **_guarded(
                        "invalid_stream_name",
                        "invalid_producer",
                        "empty_body",
                        "empty_array",
                        "missing_content_type",
                        "malformed_json",
                        "body_too_large",
                        "content_too_large",
                        "invalid_seq",
                        "stale_producer_epoch",
                        missing,
                        "stream_closed",
                        "content_type_mismatch",
                        "sequence_conflict",
                        "producer_sequence_gap",
                        "not_found",
                        "stream_gone",
                    ),
                },
            },
            "delete": {
                "operationId": "deleteStream",
                "parameters": [_DS_NAME],
                "tags": ["durable-streams"],
                "summary": "Delete a stream and its data",
                "security": _WRITE_SECURITY,
                "responses": {
                    "204": {"description": "deleted"},
                    **_guarded("invalid_stream_name", missing, "not_found", "stream_gone"),
                },
            },
            "get": _ds_read(
                "readStream",
                "Read a stream",
                _DS_NAME,
                "invalid_stream_name",
                missing,
                "stream_gone",
            ),
        },
    }


def build() -> dict[str, Any]:
    structs: list[Any] = [PostMessage, MessageAccepted, CancelState, Snapshot, ModelList, ErrorBody]
    structs.append(ConversationPage)
    structs += [Reset, StreamError, *EVENT_TYPES.values()]
    _, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )
    components.update(_stream_unions())
    cancel_responses = {
        "202": _json(_ref("CancelState"), "the run was told to stop: `cancelling`"),
        "200": _json(
            _ref("CancelState"), "the run has ended (or was ended at once): its final status"
        ),
        **_guarded(
            "invalid_id",
            "invalid_query",
            "forbidden",
            "conversation_not_found",
            "run_not_found",
            "no_active_run",
        ),
    }
    paths: dict[str, Any] = {
        "/": _static("text/html", "the chat page", "chatPage", "The chat page"),
        "/docs": _static("text/html", "this document, for people", "docsPage", "This reference"),
        "/broker.js": _static(
            "text/javascript",
            "an ES module: openConversation, send, cancel, snapshot",
            "browserModule",
            "The browser module",
        ),
        "/static/{name}": {
            "get": {
                "operationId": "asset",
                "tags": ["pages"],
                "summary": "A file the pages load (scripts, styles)",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {"*/*": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "unchanged since the ETag sent in If-None-Match"},
                    **_errors("not_found"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["pages"],
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "the OpenAPI 3.1 document")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["operations"],
                "summary": "Liveness",
                "responses": {"200": _json({"type": "object"}, "the process answers")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["operations"],
                "summary": "Readiness: a Redis round trip",
                "responses": {"200": _json({"type": "object"}, "Redis answers"), **_errors()},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics of this front process",
                "description": "The text exposition format. Open to anyone who reaches the "
                "front unless BROKER_METRICS_TOKEN is set; then send it as "
                "`Authorization: Bearer <token>`. No label names a user or a conversation.",
                "responses": {
                    "200": {
                        "description": "the metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors("unauthorized"),
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "tags": ["conversations"],
                "summary": "The model names clients may ask for",
                "description": "Names only: the catalogue's keys, URLs and headers stay on the server.",
                "security": _READ_SECURITY,
                "responses": {
                    "200": _json(_ref("ModelList"), "the catalogue's names"),
                    **_guarded(),
                },
            }
        },
        "/v1/session": {
            "post": {
                "operationId": "startSession",
                "tags": ["sessions"],
                "summary": "Trade the Bearer token for the session cookie",
                "description": "Sets the HttpOnly cookie `broker_token` (path `/v1/`) to the "
                "token, so a browser page's `EventSource` and other GET requests are "
                "authenticated; posting and cancelling still need the header.",
                "security": _WRITE_SECURITY,
                "responses": {
                    "204": {"description": "the cookie is set", "headers": _NO_STORE},
                    **_guarded(),
                },
            },
            "delete": {
                "operationId": "endSession",
                "tags": ["sessions"],
                "summary": "Clear the session cookie",
                "security": _WRITE_SECURITY,
                "responses": {
                    "204": {"description": "the cookie is cleared", "headers": _NO_STORE},
                    **_guarded(),
                },
            },
        },
        "/v1/conversations": {
            "get": {
                "operationId": "listConversations",
                "tags": ["conversations"],
                "summary": "The caller's conversations, newest activity first",
                "description": "Those the token's subject owns (an admin's too: only its own). "
                "With BROKER_AUTH=none, every conversation (they belong to nobody). Ordered by "
                "their latest message; pass `next_cursor` back as `cursor` for the next page.",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                        "description": "conversations per page",
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "the `next_cursor` of the previous page",
                    },
                ],
                "security": _READ_SECURITY,
                "responses": {
                    "200": {
                        **_json(_ref("ConversationPage"), "a page of conversations"),
                        "headers": _NO_STORE,
                    },
                    **_guarded("invalid_query", "invalid_cursor"),
                },
            }
        },
        "/v1/conversations/{cid}": {
            "delete": {
                "operationId": "deleteConversation",
                "tags": ["conversations"],
                "summary": "Delete a conversation and everything stored of it",
                "description": "The owner or an admin. An active run is cancelled first; every "
                "key is deleted; open streams end with an `error` event "
                "`conversation_deleted`. The id is free again afterwards.",
                "parameters": [_CID],
                "security": _WRITE_SECURITY,
                "responses": {
                    "204": {"description": "deleted"},
                    **_guarded("invalid_id", "forbidden", "conversation_not_found"),
                },
            },
            "get": {
                "operationId": "getConversation",
                "tags": ["conversations"],
                "summary": "The merged conversation (snapshot)",
                "description": "Render it, then stream after its `last_event_id`: each event is seen once.",
                "parameters": [_CID],
                "security": _READ_SECURITY,
                "responses": {
                    "200": {
                        **_json(_ref("Snapshot"), "the merged conversation"),
                        "headers": _NO_STORE,
                    },
                    **_guarded("invalid_id", "conversation_not_found"),
                },
            },
        },
        "/v1/conversations/{cid}/messages": {
            "post": {
                "operationId": "postMessage",
                "tags": ["conversations"],
                "summary": "Send a message; starts a run",
                "description": "The answer is generated by a worker, not inside this request: "
                "follow it on a stream.",
                "parameters": [
                    _CID,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                        "description": "a retry with the same key and body returns the first answer",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PostMessage")}},
                },
                "security": _WRITE_SECURITY,
                "responses": {
                    "202": _json(
                        _ref("MessageAccepted"), "the message is stored and its run queued"
                    ),
                    **_guarded(*_POST_MESSAGE_ERRORS),
                },
            }
        },
        "/v1/conversations/{cid}/stream": {
            "get": {
                "operationId": "streamConversation",
                "tags": ["streams"],
                "summary": "The conversation's events: replay, then live",
                "description": "Never ends by itself. With no position it starts from the "
                "beginning. A conversation that does not exist yet (an id nobody owns) gets an "
                "open stream of keep-alives that delivers its events once its first message "
                "is posted; an id somebody else owns answers 404.",
                "parameters": [_CID, *_LAST_EVENT_ID],
                "security": _READ_SECURITY,
                "responses": {
                    "200": _sse("ConversationEvent", "An SSE stream of the whole conversation."),
                    **_guarded(
                        "invalid_id",
                        "invalid_last_event_id",
                        "conversation_not_found",
                        "too_many_streams",
                    ),
                },
            }
        },
        "/v1/conversations/{cid}/runs/{run_id}/stream": {
            "get": {
                "operationId": "streamRun",
                "tags": ["streams"],
                "summary": "One run's events, closed after its terminal event",
                "parameters": [_CID, _RUN, *_LAST_EVENT_ID],
                "security": _READ_SECURITY,
                "responses": {
                    "200": _sse("RunEvent", "An SSE stream of one run, from its user message."),
                    "204": {"description": "`active` and nothing runs"},
                    **_guarded(
                        "invalid_id",
                        "invalid_last_event_id",
                        "conversation_not_found",
                        "run_not_found",
                        "too_many_streams",
                    ),
                },
            }
        },
        "/v1/conversations/{cid}/cancel": {
            "post": {
                "operationId": "cancelActiveRun",
                "tags": ["conversations"],
                "summary": "Stop the active run, from any device",
                "parameters": [_CID, _WAIT],
                "security": _WRITE_SECURITY,
                "responses": cancel_responses,
            }
        },
        "/v1/conversations/{cid}/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancelRun",
                "tags": ["conversations"],
                "summary": "Stop a named run",
                "parameters": [_CID, _RUN, _WAIT],
                "security": _WRITE_SECURITY,
                "responses": cancel_responses,
            }
        },
    }
    paths.update(_ai_sdk_paths(cancel_responses))
    paths.update(_durable_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "LLM stream broker", "version": "1", "description": _DESCRIPTION},
        "tags": [
            {"name": "conversations", "description": "messages, snapshots, cancel"},
            {"name": "streams", "description": "Server-Sent Events, resumable with Last-Event-ID"},
            {"name": "sessions", "description": "the session cookie of browser pages"},
            {"name": "operations", "description": "health checks"},
            {
                "name": "ai-sdk",
                "description": "the routes an AI SDK app points `useChat` at (README, AI SDK)",
            },
            {
                "name": "durable-streams",
                "description": "the Durable Streams protocol (README, Durable Streams)",
            },
            {"name": "pages", "description": "the chat page, the browser module, this reference"},
        ],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES},
    }


DOCUMENT: bytes = msgspec.json.encode(build())
