"""HTTP/1.1 connections with bounded request heads and no idle connection held for ever.

uvicorn's httptools protocol reads a request head without limit (one 256 MB header was
buffered whole) and closes a connection only once it has answered a request on it, so a client
that connects and sends nothing, or sends a head slowly, holds a connection for ever. This
protocol is uvicorn's, with four bounds added where the bytes arrive, before the parser buffers
them:

- a head larger than ``max_header_bytes`` (request line and headers) gets 431, and the
  connection is closed: at most one socket read (64 to 256 KB) past the limit is ever held;
- a head with more than ``max_header_count`` headers gets 431;
- a head not complete ``header_timeout`` seconds after its first byte gets 408;
- a connection with no request in flight for ``idle_timeout`` seconds is closed, whether it just
  opened or has answered requests before (uvicorn's keep-alive timeout covers only the latter).

A request the parser cannot read gets 400 ``malformed_request`` in the API's error shape
rather than uvicorn's plain-text answer.

The hot path (an SSE response, a small request) costs one comparison per socket read more.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from broker.core.errors import HEADERS_TOO_LARGE, MALFORMED_REQUEST, REQUEST_TIMEOUT, ErrorCode
from broker.core.settings import Settings
from broker.front.http.errors import error_body

# How long a refused connection's further bytes are read and dropped before it is closed.
_LINGER_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    max_header_count: int
    header_timeout: float
    idle_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            header_timeout=settings.header_timeout_seconds,
            idle_timeout=settings.idle_connection_seconds,
        )


def _refusal(code: ErrorCode, message: str) -> bytes:
    """A whole response that closes the connection, in the API's error shape."""
    body = error_body(code, message)
    status = code.status
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode()),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


_TOO_LARGE = _refusal(HEADERS_TOO_LARGE, "the request headers are too large or too many")
_TOO_SLOW = _refusal(REQUEST_TIMEOUT, "the request headers took too long to arrive")
_MALFORMED = _refusal(MALFORMED_REQUEST, "the request is not valid HTTP/1.1")


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was refused."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads and idle connections (module doc).

    One timer per connection does all the timing, the one uvicorn already arms for its
    keep-alive timeout after every response: it closes an idle connection, answers 408 to a
    head past its deadline, and does nothing while a request is in flight. A head that arrives
    in one read (nearly all of them) costs no timer at all.
    """

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self.timeout_keep_alive = limits.idle_timeout
        self._reading_head = False  # from a request's first byte to the end of its headers
        self._head_bytes = 0
        self._head_deadline = 0.0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Nothing is in flight yet: an idle connection, closed like an idle keep-alive one.
        self._arm_timer(self.timeout_keep_alive)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a refused connection's last bytes are dropped until it closes
        if self._reading_head:
            self._head_bytes += len(data)
        else:
            self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refused:
                return  # a callback refused the request and answered it
            # Answered in the API's error shape, not uvicorn's plain text; any client can send
            # this as often as it likes, so it is not worth a warning.
            self.logger.debug("Invalid HTTP request received.")
            self._refuse(_MALFORMED)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._reading_head:  # the head did not arrive whole: bound it in size and time
            if not self._head_bytes:
                self._head_bytes = len(data)
                self._head_deadline = self.loop.time() + self._limits.header_timeout
                if self.timeout_keep_alive_task is None:
                    self._arm_timer(self._limits.header_timeout)
            if self._head_bytes > self._limits.max_header_bytes:
                self._refuse(_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if len(self.headers) > self._limits.max_header_count:
            self._refuse(_TOO_LARGE)
            raise _Refused
        super().on_headers_complete()

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        if self._reading_head:
            remaining = self._head_deadline - self.loop.time()
            if remaining > 0:
                self._arm_timer(remaining)
            else:
                self._refuse(_TOO_SLOW)
        elif self.cycle is None or self.cycle.response_complete:
            super().timeout_keep_alive_handler()  # idle: closed
        # else a request is in flight, however long it takes (an SSE stream): not idle

    def _arm_timer(self, delay: float) -> None:
        self.timeout_keep_alive_task = self.loop.call_later(delay, self.timeout_keep_alive_handler)

    def _refuse(self, response: bytes) -> None:
        """Answer (unless another response is under way on this connection) and close.

        The close is gentle: sending stops, and what the client still sends is read and
        dropped for a moment, since closing a socket with unread bytes resets the connection,
        and a reset can destroy the answer before the client has read it.
        """
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._unset_keepalive_if_required()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(_LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
