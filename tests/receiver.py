"""A webhook receiver for the tests: a real HTTP server on 127.0.0.1 that records every POST.

It runs its own event loop in a thread, so worker processes reach it over a loopback socket.
Its ``mode`` decides each answer: ``"ok"`` (204), ``"done"`` (200 ``{"done":true}``, a
subscription webhook's synchronous ack), ``"error"`` (500) or ``"hang"`` (read the request,
answer nothing, hold the connection until the client leaves). It can be created on a
port before it listens, to play a receiver that is down and comes up later.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.stack import free_port

Mode = Literal["ok", "done", "error", "hang"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)
    answered: int | None = None  # the status sent, None while held

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def delivery_id(self) -> str:
        return self.headers["broker-delivery-id"]


class Receiver:
    def __init__(self, mode: Mode = "ok") -> None:
        self.mode: Mode = mode
        self.delay = 0.0  # seconds before each answer
        self.port = free_port()
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="receiver", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/runs"

    def listen(self) -> None:
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Receiver:
        self.listen()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def delivered(self) -> list[Received]:
        """The requests answered with a 2xx."""
        with self._lock:
            return [r for r in self.requests if r.answered is not None and r.answered < 300]

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            _, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        received = Received(headers, body)
        with self._lock:
            self.requests.append(received)
            mode = self.mode
        try:
            if mode == "hang":
                while await reader.read(4096):
                    pass
                return
            if self.delay:
                await asyncio.sleep(self.delay)
            status = {"ok": 204, "done": 200}.get(mode, 500)
            answer = b'{"done":true}' if mode == "done" else b""
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-length: {len(answer)}\r\n".encode()
                + b"content-type: application/json\r\nconnection: close\r\n\r\n"
                + answer
            )
            await writer.drain()
            received.answered = status
        except ConnectionError:
            pass
        finally:
            writer.close()
