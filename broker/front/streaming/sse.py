"""Server-Sent Events on the wire: the frames that are not stored entries, and an ASGI response
that streams them, writing whatever frames are ready in one socket write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import anyio
from starlette.types import Receive, Scope, Send

from broker.core.events import EVENT_TYPES, Reset, StreamEnd
from broker.front.http.docs import Events, Frame

KEEPALIVE = b": keepalive\n\n"

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def _stored(name: str, struct: type) -> Frame:
    return Frame(name, struct, (struct.__doc__ or "").strip(), stored=True)


_RESET = Frame("reset", Reset, (Reset.__doc__ or "").strip())
_ERROR = Frame("error", StreamEnd, (StreamEnd.__doc__ or "").strip())
# What the conversation and run streams send, for the OpenAPI document: every stored event
# (a new event type is in it as soon as it exists), and the unstored ones (no ``id:``).
CONVERSATION_EVENTS = Events(
    "ConversationEvent",
    (*(_stored(name, struct) for name, struct in EVENT_TYPES.items()), _RESET, _ERROR),
    "An event of a conversation's stream, keyed by its name.",
)
RUN_EVENTS = Events(
    "RunEvent",
    (*(_stored(name, struct) for name, struct in EVENT_TYPES.items()), _RESET, _ERROR),
    "An event of one run's stream: its user message through its terminal event (after a "
    "reset, when the position asked for is not one of the conversation's).",
)


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
        self,
        body: AsyncIterator[bytes],
        on_close: Callable[[], None] | None = None,
        headers: list[tuple[bytes, bytes]] = HEADERS,
    ) -> None:
        self.body = body
        self._on_close = [on_close] if on_close is not None else []
        self._headers = headers

    def also_on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` too when the stream ends, however it ends."""
        self._on_close.append(callback)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
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
            for callback in self._on_close:
                callback()
