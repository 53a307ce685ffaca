"""Every error leaves as ``{"error": {"code", "message"}}`` with a status that fits."""

from __future__ import annotations

import logging

import msgspec
import redis.exceptions
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route

from broker.core.bodies import ErrorBody
from broker.core.events import ErrorInfo

log = logging.getLogger("broker.front.routes.conversations")
_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = _encoder.encode(ErrorBody(ErrorInfo(code, message)))
    # Also here, not only in the middleware: a 500 leaves from outside every middleware.
    headers = {**(headers or {}), "X-Content-Type-Options": "nosniff"}
    return Response(body, status, headers=headers, media_type="application/json")


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        # An empty id, or a percent-encoded '/' inside one, leaves path segments no route matches.
        path = request.url.path
        raw_path = request.scope.get("raw_path") or b""
        if path.startswith("/v1/conversations/") and (
            b"%" in raw_path or "//" in path or path.endswith("/")
        ):
            return error_response(400, "invalid_id", "identifiers match [A-Za-z0-9_-]{1,128}")
        return error_response(404, "not_found", "no such endpoint")
    if exc.status_code == 405:
        headers = {**(exc.headers or {}), **_allow(request)}
        return error_response(405, "method_not_allowed", "method not allowed here", headers)
    return error_response(exc.status_code, "http_error", str(exc.detail), exc.headers)


def _allow(request: Request) -> dict[str, str]:
    """The ``Allow`` header over every route of the path: a path may have a route per method
    (reading and deleting a conversation need different access), and Starlette names only the
    methods of the first."""
    methods: list[str] = []
    for route in getattr(request.scope.get("router"), "routes", ()):
        if not isinstance(route, Route) or not route.methods:
            continue
        if route.matches(request.scope)[0] is not Match.NONE:
            methods += [m for m in route.methods if m not in methods]
    return {"Allow": ", ".join(methods)} if methods else {}


async def on_redis_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable: %s", exc)
    services = getattr(request.state, "services", None)
    if services is not None:
        services.metrics.redis_errors.inc()
    return error_response(
        503, "redis_unavailable", "the store is unreachable; retry shortly", {"Retry-After": "1"}
    )


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    # The client left before sending its whole body: nothing went wrong here, and nobody is
    # left to answer. One quiet line, since any client can do this as often as it likes.
    log.debug(
        "%s %s: the client disconnected before its body arrived", request.method, request.url.path
    )
    return error_response(400, "client_disconnected", "the client disconnected")


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal_error", "unexpected server error")


HANDLERS = {
    ApiError: on_api_error,
    HTTPException: on_http_exception,
    redis.exceptions.ConnectionError: on_redis_unavailable,
    redis.exceptions.TimeoutError: on_redis_unavailable,
    redis.exceptions.ClusterError: on_redis_unavailable,
    ClientDisconnect: on_client_disconnect,
    Exception: on_unexpected,
}
