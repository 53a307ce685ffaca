"""The headers every answer carries, for browsers: no type sniffing, and a ``Vary: Origin``
that keeps caches from handing one origin's answer to another."""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOSNIFF = (b"x-content-type-options", b"nosniff")
VARY_ORIGIN = (b"vary", b"Origin")
NO_STORE = {"Cache-Control": "no-store"}


class SecurityHeaders:
    """``X-Content-Type-Options: nosniff`` on every answer, streams and errors included, so no
    browser ever guesses a type and runs a JSON body or an event stream as a page; and
    ``Vary: Origin`` where CORS did not set it, so no cache hands one origin's answer to another.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Returns the next layer's awaitable itself, so an open stream holds no frame of this
        layer, only the small ``send`` wrapper (memory per idle connection)."""
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self.app(scope, receive, _SendWithHeaders(send))


class _SendWithHeaders:
    __slots__ = ("_send",)

    def __init__(self, send: Send) -> None:
        self._send = send

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if NOSNIFF not in headers:
                headers.append(NOSNIFF)
            if not any(name.lower() == b"vary" for name, _ in headers):
                headers.append(VARY_ORIGIN)
            message = {**message, "headers": headers}
        await self._send(message)
