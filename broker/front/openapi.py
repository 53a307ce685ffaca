"""The OpenAPI 3.1 document, generated from the routes' own declarations.

Every path, method, parameter, body, answer and error code comes from a route's ``ApiRoute``
and ``Doc`` (``broker.front.routes.declare``), the error codes' statuses and meanings from the
registry (``broker.core.errors``), and every schema from the msgspec types the code decodes
and encodes with; an event stream is the union of its frames keyed by the event name. Nothing
here names a path. What is said once for the whole API is here: the errors any request may meet
before a route, the errors of guarded routes, and the security schemes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from broker.core import errors as codes
from broker.core.bodies import ErrorBody
from broker.core.errors import ErrorCode
from broker.front.http.docs import Doc, Events, Json, Param, Raw, Reply
from broker.front.routes.declare import ApiRoute
from broker.front.security.access import Access

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
_STREAM_ID = {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"}
_PATH_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
# The usual meaning of a path parameter; a route's Doc may say otherwise.
_PATH_PARAMS = {
    "cid": "the conversation: any id the client chooses; the first message creates it",
    "run_id": "a run id from `POST .../messages` or `run.started`, or `active`",
}
# Path parameters that are identifiers (a malformed one is a 400 invalid_id).
_IDS = frozenset(_PATH_PARAMS)

# Any request may meet these before any route, named in the description, not per operation.
BEFORE_ANY_ROUTE = (
    codes.NOT_FOUND,
    codes.METHOD_NOT_ALLOWED,
    codes.CORS_REFUSED,
    codes.MALFORMED_REQUEST,
    codes.REQUEST_TIMEOUT,
    codes.HEADERS_TOO_LARGE,
    codes.UNSUPPORTED_TRANSFER_CODING,
    codes.CLIENT_DISCONNECTED,
    codes.HTTP_ERROR,
)
_ALWAYS = (codes.REDIS_UNAVAILABLE, codes.STORE_FULL, codes.INTERNAL_ERROR)
# Any request behind authentication and the per-subject limits may meet these.
_GUARDED = (
    codes.UNAUTHORIZED,
    codes.TOO_MANY_FAILED_AUTHENTICATIONS,
    codes.RATE_LIMITED,
    codes.AUTH_UNAVAILABLE,
)

_DESCRIPTION = """\
A durable, resumable stream broker for LLM token streams. A client posts a message, which
starts a run in a background worker; the run's events are stored in the conversation's stream
and served over Server-Sent Events from any front process. Render the snapshot
(`GET /v1/conversations/{cid}`), then stream after its `last_event_id`; after a disconnect,
reconnect with the last `id:` received: nothing is lost or repeated. Closing a stream never
stops a run; only `POST .../cancel` does, from any device.

Every error is `{"error": {"code", "message"}}`; each response below names the codes it can
carry. Any path may also answer these, before any route: """

_TAGS = [
    {"name": "conversations", "description": "messages, snapshots, cancel"},
    {"name": "streams", "description": "Server-Sent Events, resumable with Last-Event-ID"},
    {"name": "sessions", "description": "the session cookie of browser pages"},
    {"name": "operations", "description": "health checks and metrics"},
    {"name": "ai-sdk", "description": "the routes an AI SDK app points `useChat` at"},
    {"name": "durable-streams", "description": "the Durable Streams protocol"},
    {"name": "pages", "description": "the chat page, the browser module, this reference"},
]
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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    """The types the document refers to, turned into components at the end, all at once."""

    def __init__(self) -> None:
        self.types: dict[Any, int] = {}
        self.extra: dict[str, Any] = {}

    def of(self, value: Any) -> dict[str, Any]:
        """A schema for a msgspec type (a reference to its component), or a schema as given."""
        if isinstance(value, dict):
            return value
        index = self.types.setdefault(value, len(self.types))
        return {"$ref": index}  # a placeholder, resolved once every type is known

    def components(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        refs, components = msgspec.json.schema_components(
            list(self.types), ref_template="#/components/schemas/{name}"
        )
        return list(refs), {**components, **self.extra}


def _resolve(node: Any, refs: list[dict[str, Any]]) -> Any:
    """Replace the placeholders ``{"$ref": <index>}`` with the real schemas."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, int):
            return refs[ref]
        return {key: _resolve(value, refs) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(value, refs) for value in node]
    return node


def _frames(events: Events, schemas: _Schemas) -> dict[str, Any]:
    """The union of an event stream's frames, as a component; returns a reference to it."""
    names = []
    for frame in events.frames:
        label = frame.event or _data_label(frame.data)
        properties: dict[str, Any] = {}
        if frame.stored:
            properties["id"] = {**_STREAM_ID, "description": "its Redis Stream entry id"}
        if frame.event is not None:
            properties["event"] = {"const": frame.event}
        properties["data"] = schemas.of(frame.data)
        schema = {
            "type": "object",
            "title": f"event: {frame.event}" if frame.event else label,
            "description": frame.description,
            "properties": properties,
            "required": list(properties),
        }
        name = "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", label)) + "Frame"
        if schemas.extra.get(name, schema) != schema:
            name = events.name + name  # another stream's frame of the same name
        schemas.extra[name] = schema
        names.append((frame.event, name))
    union: dict[str, Any] = {
        "description": events.description,
        "oneOf": [_ref(name) for _, name in names],
    }
    if all(event is not None for event, _ in names):
        union["discriminator"] = {
            "propertyName": "event",
            "mapping": {event: f"#/components/schemas/{name}" for event, name in names},
        }
    schemas.extra[events.name] = union
    return _ref(events.name)


def _data_label(data: Any) -> str:
    config = getattr(data, "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return str(tag) if tag else getattr(data, "__name__", "data")


def _content(body: Json | Events | Raw, schemas: _Schemas) -> dict[str, Any]:
    if isinstance(body, Json):
        return {"application/json": {"schema": schemas.of(body.type)}}
    if isinstance(body, Events):
        return {"text/event-stream": {"schema": _frames(body, schemas)}}
    return {media_type: {"schema": body.schema} for media_type in body.media_types}


def _headers(reply: Reply) -> dict[str, Any]:
    found = {}
    for header in reply.headers:
        name, _, value = header.partition(":")
        found[name.strip()] = {"schema": {"type": "string", "const": value.strip()}}
    return found


def _responses(doc: Doc, errors: Sequence[ErrorCode], schemas: _Schemas) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for reply in doc.replies:
        key = str(reply.status)
        answer = responses.setdefault(key, {"description": reply.description})
        if answer["description"] != reply.description:
            answer["description"] += "; " + reply.description
        if reply.body is not None:
            answer.setdefault("content", {}).update(_content(reply.body, schemas))
        if reply.headers:
            answer.setdefault("headers", {}).update(_headers(reply))
    by_status: dict[int, list[ErrorCode]] = {}
    for code in errors:
        if code not in by_status.setdefault(code.status, []):
            by_status[code.status].append(code)
    for status, of_status in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "; ".join(f"`{code.name}`: {code.meaning}" for code in of_status),
            "content": {"application/json": {"schema": _ref("ErrorBody")}},
        }
    return responses


def _parameter(param: Param) -> dict[str, Any]:
    found = {
        "name": param.name,
        "in": param.where,
        "required": param.required,
        "schema": param.schema,
        "description": param.description,
    }
    return found


def _operation(route: ApiRoute, method: str, doc: Doc, schemas: _Schemas) -> dict[str, Any]:
    path_names = _PATH_PARAM.findall(route.path)
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _ID if name in _IDS else {"type": "string"},
            "description": doc.path_params.get(name) or _PATH_PARAMS.get(name, name),
        }
        for name in path_names
    ]
    parameters += [_parameter(param) for param in doc.params]
    errors: list[ErrorCode] = []
    if any(name in _IDS for name in path_names):
        errors.append(codes.INVALID_ID)
    errors += doc.errors
    if route.access is not Access.PUBLIC:
        errors += _GUARDED
    errors += _ALWAYS
    operation: dict[str, Any] = {
        "operationId": doc.operation_id,
        "tags": [doc.tag],
        "summary": doc.summary,
    }
    if doc.description:
        operation["description"] = doc.description
    if parameters:
        operation["parameters"] = parameters
    if route.access is not Access.PUBLIC:
        operation["security"] = _READ_SECURITY if method == "get" else _WRITE_SECURITY
    if doc.body is not None:
        operation["requestBody"] = {
            "required": doc.body_required,
            "content": _content(doc.body, schemas),
        }
    operation["responses"] = _responses(doc, errors, schemas)
    return operation


def build(routes: Sequence[Any]) -> dict[str, Any]:
    """The document of ``routes`` (an app's routes: every one is an ``ApiRoute``)."""
    schemas = _Schemas()
    schemas.of(ErrorBody)  # every error answer refers to it
    paths: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, ApiRoute):
            raise TypeError(f"{getattr(route, 'path', route)!r} is not declared (ApiRoute)")
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        item = paths.setdefault(path, {})
        for method in sorted(route.methods or ()):
            if method == "HEAD" and "GET" in (route.methods or ()):
                continue  # Starlette answers HEAD for every GET route
            doc = route.docs.get(method) or route.docs["GET"]
            item[method.lower()] = _operation(route, method.lower(), doc, schemas)
    refs, components = schemas.components()
    generic = ", ".join(f"`{code.name}` ({code.status})" for code in BEFORE_ANY_ROUTE)
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "LLM stream broker",
            "version": "1",
            "description": _DESCRIPTION + generic + ".",
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES},
    }
    return _resolve(document, refs)
