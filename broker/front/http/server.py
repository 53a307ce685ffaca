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
rather than uvicorn's plain-text answer, and one with a transfer coding other than ``chunked``
gets 501. Either refusal comes after the answers of the complete requests pipelined before it,
in order, and ends the connection. Every refusal is counted in the HTTP metrics like any answer.

A connection is closed the way mature servers close one: sending stops first, and what the
client still sends is read and dropped for a while (lingering), since closing a socket with
unread bytes resets the connection, and a reset can destroy the answer before the client has
read it. That happens after a refusal, and after an answer given before the request's body
was read (a 413 to a large upload): such a connection is not kept alive.

The hot path (an SSE response, a small request) costs one comparison per socket read more.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from broker.core.errors import (
    HEADERS_TOO_LARGE,
    MALFORMED_REQUEST,
    REQUEST_TIMEOUT,
    UNSUPPORTED_TRANSFER_CODING,
    ErrorCode,
)
from broker.core.settings import Settings
from broker.front.http.errors import error_body

# A closing connection's further bytes are read and dropped until the client has sent nothing
# for a second, and at most for half a minute (nginx's lingering_timeout and lingering_time).
_LINGER_QUIET_SECONDS = 1.0
_LINGER_MAX_SECONDS = 30.0


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


class Refusal(bytes):
    """A whole response that closes the connection, in the API's error shape."""

    status: int


def _refusal(code: ErrorCode, message: str) -> Refusal:
    body = error_body(code, message)
    status = code.status
    refusal = Refusal(
        b"".join(
            [
                b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode()),
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
                body,
            ]
        )
    )
    refusal.status = status
    return refusal


_TOO_LARGE = _refusal(HEADERS_TOO_LARGE, "the request headers are too large or too many")
_TOO_SLOW = _refusal(REQUEST_TIMEOUT, "the request headers took too long to arrive")
_MALFORMED = _refusal(MALFORMED_REQUEST, "the request is not valid HTTP/1.1")
_TRANSFER_CODING = _refusal(
    UNSUPPORTED_TRANSFER_CODING, "the only transfer coding a request may use is chunked"
)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was refused."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads and idle connections (module doc).

    One timer per connection does all the timing, the one uvicorn already arms for its
    keep-alive timeout after every response: it closes an idle connection, answers 408 to a
    head past its deadline, and does nothing while a request is in flight. A head that arrives
    in one read (nearly all of them) costs no timer at all. ``on_refused(status)`` counts the
    answers given here, below the app.
    """

    def __init__(
        self,
        *args: Any,
        limits: HttpLimits,
        on_refused: Callable[[int], None] = lambda status: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._on_refused = on_refused
        self.timeout_keep_alive = limits.idle_timeout
        self._reading_head = False  # from a request's first byte to the end of its headers
        self._head_bytes = 0
        self._head_deadline = 0.0
        # Once refused or closing, nothing more is parsed; a refusal waits for the answers
        # of the requests before it.
        self._closing = False
        self._deferred: Refusal | None = None
        self._linger_deadline = 0.0
        self._linger: asyncio.TimerHandle | None = None
        # The request being answered. uvicorn's ``self.cycle`` is the newest request parsed,
        # which is not that one when requests are pipelined behind a stream.
        self._answering: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Nothing is in flight yet: an idle connection, closed like an idle keep-alive one.
        self._arm_timer(self.timeout_keep_alive)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            if self._linger is not None:  # still sending: give it another quiet second
                self._linger.cancel()
                self._linger = self.loop.call_at(
                    min(self.loop.time() + _LINGER_QUIET_SECONDS, self._linger_deadline),
                    self.transport.close,
                )
            return  # a closing connection's last bytes are dropped
        if self._reading_head:
            self._head_bytes += len(data)
        else:
            self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._closing:
                return  # a callback refused the request
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
        for name, value in self.headers:
            if name == b"transfer-encoding" and value.strip().lower() != b"chunked":
                self._refuse(_TRANSFER_CODING)
                raise _Refused
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.disconnected:
            # Answered before its body was read (a 413 to a large upload): the rest of the
            # body is not worth reading into a next request. End the connection gently.
            self.server_state.total_requests += 1
            self._close_gently()
            return
        super().on_response_complete()
        done = self.cycle is None or self.cycle.response_complete
        if self._deferred is not None and not self.pipeline and done:
            refusal, self._deferred = self._deferred, None
            self._answer_and_close(refusal)

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

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` once every complete request before it has been answered, then
        end the connection; nothing after it is read as a request."""
        if self._closing or self.transport.is_closing():
            return
        self._closing = True
        self._unset_keepalive_if_required()
        self._on_refused(refusal.status)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            # The request being read is the broken one: its handler learns that the client
            # left (it answers nothing), and the refusal is the answer.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self._close_gently()
                return
        elif cycle is not None and not cycle.response_complete or self.pipeline:
            self._deferred = refusal  # after the answers still due (on_response_complete)
            return
        self._answer_and_close(refusal)

    def _answer_and_close(self, refusal: Refusal) -> None:
        self.transport.write(refusal)
        self._close_gently()

    def _close_gently(self) -> None:
        """Stop sending, read and drop what the client still sends (lingering), then close."""
        self._closing = True
        self._unset_keepalive_if_required()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.flow.resume_reading()
        self.transport.write_eof()
        now = self.loop.time()
        self._linger_deadline = now + _LINGER_MAX_SECONDS
        self._linger = self.loop.call_at(now + _LINGER_QUIET_SECONDS, self.transport.close)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._answering = cycle
        super()._start_asgi_task(cycle, app)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        # Every request still being answered or waiting learns that the client is gone (uvicorn
        # tells only the newest one, so a stream with a request pipelined behind it would go on
        # writing to a closed connection).
        for cycle in (self._answering, *(cycle for cycle, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        super().connection_lost(exc)
