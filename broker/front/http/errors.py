"""Every error leaves as ``{"error": {"code", "message"}}`` with its code's status.

Code raises ``ApiError`` with a code of the registry (``broker.core.errors``); the handlers here
turn it, and everything else that can go wrong in a request, into that answer.
"""

from __future__ import annotations

import logging

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route

from broker.core.bodies import ErrorBody
from broker.core.errors import (
    CLIENT_DISCONNECTED,
    HTTP_ERROR,
    INTERNAL_ERROR,
    INVALID_ID,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    REDIS_UNAVAILABLE,
    STORE_FULL,
    ApiError,
    ErrorCode,
)
from broker.core.events import ErrorInfo
from broker.engine import FULL, UNAVAILABLE

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


def error_body(code: ErrorCode, message: str, fields: dict[str, object] | None = None) -> bytes:
    if fields:
        return _encoder.encode({"error": {"code": code.name, "message": message, **fields}})
    return _encoder.encode(ErrorBody(ErrorInfo(code.name, message)))


def error_response(
    code: ErrorCode,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    status: int | None = None,
    fields: dict[str, object] | None = None,
) -> Response:
    """The answer for ``code`` (with its own status unless ``status`` says otherwise: an HTTP
    error of another kind keeps its status)."""
    # Also here, not only in the middleware: a 500 leaves from outside every middleware.
    headers = {**(headers or {}), "X-Content-Type-Options": "nosniff"}
    return Response(
        error_body(code, message, fields),
        status or code.status,
        headers=headers,
        media_type="application/json",
    )


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.error, exc.message, exc.headers, fields=exc.fields)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        # An empty id, or a percent-encoded '/' inside one, leaves path segments no route matches.
        path = request.url.path
        raw_path = request.scope.get("raw_path") or b""
        if path.startswith("/v1/conversations/") and (
            b"%" in raw_path or "//" in path or path.endswith("/")
        ):
            return error_response(INVALID_ID, "identifiers match [A-Za-z0-9_-]{1,128}")
        return error_response(NOT_FOUND, "no such endpoint")
    if exc.status_code == 405:
        headers = {**(exc.headers or {}), **_allow(request)}
        return error_response(METHOD_NOT_ALLOWED, "method not allowed here", headers)
    return error_response(HTTP_ERROR, str(exc.detail), exc.headers, status=exc.status_code)


def _allow(request: Request) -> dict[str, str]:
    """The ``Allow`` header over every route of the path: a path may have a route per method
    (reading and deleting a conversation need different access), and Starlette names only the
    methods of the first. Of routes that all match, those with the longest literal start win:
    ``/v1/stream/__ds/jwks.json`` is not also a stream because ``/v1/stream/{name:path}``
    would match it."""
    matching: list[Route] = []
    for route in getattr(request.scope.get("router"), "routes", ()):
        if not isinstance(route, Route) or not route.methods:
            continue
        if route.matches(request.scope)[0] is not Match.NONE:
            matching.append(route)
    longest = max((len(route.path.split("{", 1)[0]) for route in matching), default=0)
    methods: list[str] = []
    for route in matching:
        if len(route.path.split("{", 1)[0]) == longest:
            methods += [m for m in route.methods or () if m not in methods]
    return {"Allow": ", ".join(methods)} if methods else {}


def unavailable_response() -> Response:
    """The answer to a request Redis could not serve."""
    return error_response(
        REDIS_UNAVAILABLE, "the store is unreachable; retry shortly", {"Retry-After": "1"}
    )


async def on_redis_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable: %s", exc)
    services = getattr(request.state, "services", None)
    if services is not None:
        services.metrics.redis_errors.inc()
    return unavailable_response()


async def on_store_full(request: Request, exc: Exception) -> Response:
    # maxmemory with noeviction (as it should be: evicting would lose conversations): writes
    # fail until retention frees room; an operator's problem, not a defect of the request.
    log.warning("Redis refuses writes: %s", exc)
    return error_response(
        STORE_FULL, "the store is full and refuses writes; retry later", {"Retry-After": "30"}
    )


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    # The client left before sending its whole body: nothing went wrong here, and nobody is
    # left to answer. One quiet line, since any client can do this as often as it likes.
    log.debug(
        "%s %s: the client disconnected before its body arrived", request.method, request.url.path
    )
    return error_response(CLIENT_DISCONNECTED, "the client disconnected")


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return error_response(INTERNAL_ERROR, "unexpected server error")


HANDLERS = {
    ApiError: on_api_error,
    HTTPException: on_http_exception,
    **dict.fromkeys(UNAVAILABLE, on_redis_unavailable),
    FULL: on_store_full,
    ClientDisconnect: on_client_disconnect,
    Exception: on_unexpected,
}
