"""A lean HTTP/1.1 keep-alive client for the benchmark's requests to a server under test.

The appender writes to the peers over HTTP, and the Durable Streams benchmark measures appends
of a few hundred microseconds: a general-purpose client would cost the load generator more
CPU than the request costs the server, on a machine whose cores the server shares. This one is
an ``asyncio.Protocol`` that sends a request and parses just enough of the answer (status line,
headers, a ``Content-Length`` or chunked body) to hand it back with the time it arrived.
One request at a time per connection, as a keep-alive client without pipelining does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

_NO_BODY = (204, 304)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    at_ns: int  # time.time_ns() when the answer was complete


class Connection(asyncio.Protocol):
    """One keep-alive connection to one server; ``request`` is not reentrant."""

    def __init__(self, host: str) -> None:
        self._host = host
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._head_only = False
        self.transport: asyncio.Transport | None = None
        self.closed = False

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("the server closed the connection"))

    def send(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> asyncio.Future[Response]:
        """Write a request now; the future resolves with its answer."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionError("the connection is closed")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}"]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        self._waiter = asyncio.get_running_loop().create_future()
        self._head_only = method == "HEAD"
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return self._waiter

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        return await self.send(method, path, headers, body)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        parsed = self._parse()
        if parsed is not None:
            response, used = parsed
            del self._buffer[:used]
            self._waiter.set_result(response)

    def _parse(self) -> tuple[Response, int] | None:
        """The complete answer at the start of the buffer and its length, or None yet."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if self._head_only or status in _NO_BODY or 100 <= status < 200:
            return Response(status, headers, b"", time.time_ns()), start
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            pos = start
            while True:
                line_end = buffer.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                size = int(bytes(buffer[pos:line_end]).split(b";", 1)[0], 16)
                pos = line_end + 2
                if size == 0:
                    trailer_end = buffer.find(b"\r\n", pos)
                    if trailer_end < 0:
                        return None
                    return Response(status, headers, bytes(body), time.time_ns()), trailer_end + 2
                if len(buffer) < pos + size + 2:
                    return None
                body += buffer[pos : pos + size]
                pos += size + 2
        length = int(headers.get("content-length", "0"))
        if len(buffer) < start + length:
            return None
        body_bytes = bytes(buffer[start : start + length])
        return Response(status, headers, body_bytes, time.time_ns()), start + length


class Pool:
    """A few keep-alive connections to one server, lent one request at a time.

    A connection the server closed while it was idle (servers end idle keep-alive connections
    after a few seconds, and a scenario's set-up can take longer) is opened again before use.
    """

    def __init__(self, base_url: str, size: int) -> None:
        self._base_url = base_url
        self._size = size
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        self._all: list[Connection] = []

    async def open(self) -> Pool:
        for _ in range(self._size):
            connection = await Connection.open(self._base_url)
            self._all.append(connection)
            self._idle.put_nowait(connection)
        return self

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        connection = await self._idle.get()
        try:
            if (
                connection.closed
                or connection.transport is None
                or connection.transport.is_closing()
            ):
                self._all.remove(connection)
                connection = await Connection.open(self._base_url)
                self._all.append(connection)
            return await connection.request(method, path, headers, body)
        finally:
            self._idle.put_nowait(connection)

    def close(self) -> None:
        for connection in self._all:
            connection.close()


def expect(response: Response, *statuses: int, what: str) -> Response:
    if response.status not in statuses:
        raise RuntimeError(f"bench: {what} answered {response.status}: {response.body[:200]!r}")
    return response
