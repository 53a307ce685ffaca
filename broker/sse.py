"""Server-Sent Events on the wire: frames, and an ASGI response that streams them.

A frame is built once per stream entry from the stored bytes and shared by every client of that
stream; the response writes whatever frames are ready in one socket write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import NamedTuple

import anyio
from starlette.types import Receive, Scope, Send

from broker.ids import StreamPos

KEEPALIVE = b": keepalive\n\n"
TERMINAL_NAMES = frozenset({b"run.completed", b"run.cancelled", b"run.failed"})

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


class Entry(NamedTuple):
    """One stream entry, ready to send."""

    pos: StreamPos
    run_id: bytes
    name: bytes
    frame: bytes


def entry_from_redis(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    ms, _, seq = entry_id.partition(b"-")
    name = fields[b"t"]
    frame = b"id: " + entry_id + b"\nevent: " + name + b"\ndata: " + fields[b"d"] + b"\n\n"
    return Entry((int(ms), int(seq)), fields.get(b"r", b""), name, frame)


def unstored_frame(name: str, data: bytes) -> bytes:
    """A frame with no ``id:``, so the client's resume position stays where it was."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def retry_frame(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


class EventStreamResponse:
    """Streams ``body`` until it ends or the client goes away, whichever comes first.

    Leaving the client's disconnect to a watcher task means a client that is gone stops costing
    anything at once, even while its feed is waiting for the next live event.
    """

    def __init__(
        self, body: AsyncIterator[bytes], on_close: Callable[[], None] | None = None
    ) -> None:
        self.body = body
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                async with aclosing(self.body) as chunks:
                    async for chunk in chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        finally:
            if self.on_close is not None:
                self.on_close()
