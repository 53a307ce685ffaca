"""A lean asyncio Server-Sent Events client over a raw socket.

The tests check the bytes a browser would see, so this client does not hide anything an HTTP
library would: it speaks HTTP/1.1 itself, decodes chunked transfer coding, and parses the SSE
fields (``id``, ``event``, ``data``, ``retry`` and comment lines) incrementally, with the
parser the product itself uses (``broker.core.sse``). It costs one socket and a few small
buffers per connection, so one test process can hold hundreds at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from broker.core.sse import EventStreamParser

TERMINAL_EVENTS = frozenset({"run.completed", "run.cancelled", "run.failed"})


@dataclass(frozen=True)
class Event:
    """One dispatched SSE event; ``id`` is None when the event carried no ``id:`` field."""

    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def run_id(self) -> str | None:
        try:
            value = self.json()
        except ValueError:
            return None
        return value.get("run_id") if isinstance(value, dict) else None

    @property
    def is_terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS


class ProtocolError(Exception):
    """The server sent bytes that are not valid HTTP/1.1 or SSE framing."""


class _Dechunker:
    """Incremental decoder of HTTP/1.1 ``Transfer-Encoding: chunked``."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = "size"
        self._remaining = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while not self.done:
            if self._state == "size":
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    break
                line = bytes(self._buffer[:end]).split(b";", 1)[0].strip()
                del self._buffer[: end + 2]
                try:
                    size = int(line, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line {line!r}") from None
                if size == 0:
                    self.done = True  # trailers, if any, are of no interest here
                    break
                self._remaining = size
                self._state = "data"
            elif self._state == "data":
                take = min(self._remaining, len(self._buffer))
                if take == 0:
                    break
                out += self._buffer[:take]
                del self._buffer[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "crlf"
            else:
                if len(self._buffer) < 2:
                    break
                if self._buffer[:2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                del self._buffer[:2]
                self._state = "size"
        return bytes(out)


class SSEParser(EventStreamParser[Event]):
    """The shared parser (``broker.core.sse``), keeping what the tests look at: each event's own
    ``id:`` field (None when it carried none), and every comment line with when it arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.comments: list[tuple[float, str]] = []

    @property
    def retry(self) -> int | None:
        return self.retry_ms

    def _make_event(self, event: str, data: str, own_id: str | None) -> Event:
        return Event(own_id, event, data)

    def _on_comment(self, text: str) -> None:
        self.comments.append((time.monotonic(), text.lstrip(" ")))


@dataclass
class Response:
    """Status line and headers of a response; ``body`` is filled for non-streaming answers."""

    status: int
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class SSEStream:
    """An open SSE response: iterate it for events; ``None`` from ``next`` means the end."""

    response: Response
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    _dechunker: _Dechunker | None
    _remaining: int | None  # for a Content-Length body
    parser: SSEParser = field(default_factory=SSEParser)
    events: list[Event] = field(default_factory=list)
    _ready: deque[Event] = field(default_factory=deque)
    eof: bool = False
    ending: str = ""  # how the body ended: "terminating chunk", "connection closed", "length"
    opening: bytes = b""  # the body's first bytes, as sent (the contract puts retry: there)

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> dict[str, str]:
        return self.response.headers

    async def _read_more(self) -> bool:
        """Read one socket chunk into the parser; False once the body has ended."""
        if self.eof:
            return False
        data = await self._reader.read(65536)
        if not data:
            self.eof, self.ending = True, "connection closed"
            return False
        if self._dechunker is not None:
            data = self._dechunker.feed(data)
            if self._dechunker.done:
                self.eof, self.ending = True, "terminating chunk"
        elif self._remaining is not None:
            data = data[: self._remaining]
            self._remaining -= len(data)
            if self._remaining <= 0:
                self.eof, self.ending = True, "length"
        if len(self.opening) < 64:
            self.opening += data[: 64 - len(self.opening)]
        self._ready.extend(self.parser.feed(data))
        return not self.eof or bool(self._ready)

    async def next(self, timeout: float = 10.0) -> Event | None:
        """The next event; None at the end of the body; TimeoutError when none comes in time."""
        async with asyncio.timeout(timeout):
            while not self._ready:
                if not await self._read_more():
                    if not self._ready:
                        return None
        event = self._ready.popleft()
        self.events.append(event)
        return event

    async def read_until(self, stop: Callable[[Event], bool], timeout: float = 30.0) -> list[Event]:
        """Events up to and including the first one ``stop`` accepts; raises on EOF first."""
        start = len(self.events)
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if event is None:
                    raise ProtocolError(
                        f"the stream ended ({self.ending}) before the expected event; "
                        f"last events: {self.events[-3:]}"
                    )
                if stop(event):
                    return self.events[start:]

    async def read_to_end(self, timeout: float = 30.0) -> list[Event]:
        """Every event until the server closes the body."""
        start = len(self.events)
        async with asyncio.timeout(timeout):
            while await self.next(timeout) is not None:
                pass
        return self.events[start:]

    async def wait_comments(self, count: int, timeout: float) -> None:
        """Read until at least ``count`` comment lines arrived."""
        async with asyncio.timeout(timeout):
            while len(self.parser.comments) < count:
                if not await self._read_more():
                    raise ProtocolError("the stream ended while waiting for comments")
                while self._ready:
                    self.events.append(self._ready.popleft())

    async def close(self) -> None:
        """Drop the connection abruptly, as a closed tab or a lost network would."""
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2)
        except (OSError, TimeoutError):
            pass

    async def __aenter__(self) -> SSEStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(parts[1]), headers


async def open_sse(
    base_url: str,
    path: str,
    *,
    last_event_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> SSEStream:
    """GET ``path`` and return once the response head arrived.

    A non-200 answer has its whole body read into ``stream.response.body`` and the connection
    closed, so callers can check error bodies the same way.
    """
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        try:
            lines = [
                f"GET {path} HTTP/1.1",
                f"Host: {host}:{port}",
                "Accept: text/event-stream",
                "Cache-Control: no-cache",
            ]
            if last_event_id is not None:
                lines.append(f"Last-Event-ID: {last_event_id}")
            for name, value in (headers or {}).items():
                lines.append(f"{name}: {value}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            status, response_headers = await _read_head(reader)
        except BaseException:
            writer.close()
            raise
    chunked = "chunked" in response_headers.get("transfer-encoding", "").lower()
    length = response_headers.get("content-length")
    stream = SSEStream(
        Response(status, response_headers),
        reader,
        writer,
        _Dechunker() if chunked else None,
        int(length) if length is not None and not chunked else None,
    )
    if stream._remaining == 0 or status in (204, 304):
        stream.eof = True
    if status != 200:
        body = bytearray()
        async with asyncio.timeout(timeout):
            while not stream.eof:
                data = await reader.read(65536)
                if not data:
                    break
                if stream._dechunker is not None:
                    body += stream._dechunker.feed(data)
                    stream.eof = stream._dechunker.done
                else:
                    body += data
                    if stream._remaining is not None and len(body) >= stream._remaining:
                        stream.eof = True
        stream.response.body = bytes(body)
        stream.eof = True
        await stream.close()
    return stream
