"""The SSE routes, dispatched directly, past Starlette's router and exception middleware.

A stream lives for minutes or days. Every layer around a request stays on the stack for that
long, and Starlette's exception middleware and router add several frames and wrap ``send``,
so each event sent would pass through more calls. Placed as the innermost middleware (after
authentication and the other security layers, which still see every request), this
dispatcher matches the stream routes exactly as the router would, calls their endpoints (the
guarded ones: access checks and limits included) and turns their errors into the responses
the app's exception handlers give. Every other request goes on to the router.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.front.http.errors import HANDLERS


class StreamRoutes:
    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = list(routes)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Returns the awaitable of whoever serves the request: this layer keeps no frame."""
        if scope["type"] == "http":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    return _serve(route, scope, receive, send)
        return self.app(scope, receive, send)


async def _serve(route: Route, scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    try:
        response = await route.endpoint(request)
    except Exception as exc:
        response = await _error_response(request, exc)
    await response(scope, receive, send)


async def _error_response(request: Request, exc: Exception) -> Response:
    """What the app's exception handlers answer, looked up along the exception's classes."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)  # type: ignore[call-overload]
        if handler is not None:
            return await handler(request, exc)
    raise exc
