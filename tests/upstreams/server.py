"""A fake model upstream: a real HTTP/1.1 server on 127.0.0.1 replaying scripted bytes.

It runs its own event loop in a thread, so the provider tests (in the test's loop) and worker
processes (through the catalogue) reach it the same way, over a loopback socket. Each request
takes the next scripted ``Reply``: a status, headers, and body pieces sent as they are (each one
an HTTP chunk, optionally some time apart), then a complete end, a cut (the connection closed
mid-body), a hold (nothing more until the client leaves) or, before any byte, a drop. Every
request is recorded with the moment its client disconnected, which is how the tests see that a
cancel closed the upstream call.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

End = Literal["complete", "cut", "hold", "drop"]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    parts: list[bytes] = field(default_factory=list)
    end: End = "complete"
    # Hold before sending the status line, until the client leaves (a first-byte timeout).
    hold_head: bool = False
    # Seconds between body pieces: a model producing its answer over time.
    interval: float = 0.0


def sse_reply(body: bytes, *, piece: int = 0, end: End = "complete", status: int = 200) -> Reply:
    """A byte-exact SSE body, sent whole or in ``piece``-byte pieces cut anywhere."""
    return Reply(
        status, {"content-type": "text/event-stream; charset=utf-8"}, pieces(body, piece), end
    )


def ndjson_reply(body: bytes, *, piece: int = 0, end: End = "complete") -> Reply:
    return Reply(200, {"content-type": "application/x-ndjson"}, pieces(body, piece), end)


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status, {"content-type": "application/json", **(headers or {})}, [raw])


def pieces(body: bytes, size: int) -> list[bytes]:
    if size <= 0:
        return [body] if body else []
    return [body[i : i + size] for i in range(0, len(body), size)]


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    disconnected: threading.Event = field(default_factory=threading.Event)

    def json(self) -> Any:
        return json.loads(self.body)


class FakeUpstream:
    """The server; use as a context manager. ``reply()`` scripts the next responses."""

    def __init__(self) -> None:
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[Seen] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-upstream", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wait_disconnect(self, index: int = -1, timeout: float = 10.0) -> bool:
        """Block until the client of request ``index`` left (for a thread)."""
        deadline = time.monotonic() + timeout
        while not self.requests:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return self.requests[index].disconnected.wait(max(0.0, deadline - time.monotonic()))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        seen = Seen(method, path, headers, body)
        with self._lock:
            self.requests.append(seen)
            reply = (
                self._replies.popleft() if self._replies else Reply(500, {}, [b"no reply scripted"])
            )
        watcher = asyncio.ensure_future(self._watch(reader, seen))
        try:
            if reply.end == "drop":
                return
            if reply.hold_head:
                await watcher
                return
            reason = (
                HTTPStatus(reply.status).phrase
                if reply.status in HTTPStatus._value2member_map_
                else "X"
            )
            lines = [f"HTTP/1.1 {reply.status} {reason}"]
            lines += [f"{name}: {value}" for name, value in reply.headers.items()]
            lines += ["transfer-encoding: chunked", "connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1"))
            for index, part in enumerate(reply.parts):
                if index and reply.interval:
                    await asyncio.sleep(reply.interval)
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            if reply.end == "complete":
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            elif reply.end == "hold":
                await watcher
        except ConnectionError:
            seen.disconnected.set()
        finally:
            writer.close()
            if reply.end != "hold":
                watcher.cancel()

    async def _watch(self, reader: asyncio.StreamReader, seen: Seen) -> None:
        """Mark the request's client as gone when its side of the connection closes."""
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        seen.disconnected.set()
