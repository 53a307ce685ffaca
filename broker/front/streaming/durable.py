"""Durable Streams reads: catch-up, long-poll and SSE, over a stream or a conversation.

A ``Source`` is what a read reads: the engine's view of a Redis Stream (its state and its
entries) and how one of its entries becomes a message (a stream's message as it was appended;
a conversation's event as ``{"id", "type", "data"}``).

Live reads wait on the front's hub like the conversation streams do: a subscription to the
stream's channel, taken before the stream is read, so nothing appended after that read can be
missed; each notice (or its loss, ``GAP``) wakes the reader, who reads Redis from its own
position. No reader blocks in Redis, and the process's drain (``CLOSED``) ends every wait.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio

from broker.core.entries import Entry, entry_data
from broker.core.errors import OFFSET_GONE, STREAM_NOT_FOUND, TOKEN_EXPIRED, ApiError
from broker.core.ids import ORIGIN, StreamPos
from broker.engine import Engine
from broker.engine.streams import State, StreamMeta, StreamView
from broker.front.streaming.hub import CLOSED, Hub, LiveBatch
from broker.protocols.durable_streams.framing import (
    JSON,
    TOKEN_EXPIRED_EVENT,
    control_event,
    conversation_message,
    data_event,
)


@dataclass(frozen=True, slots=True)
class Source:
    view: StreamView
    content_type: str
    media_type: str
    etag_id: str
    ttl: int | None
    closable: bool  # a conversation never closes
    stream_key: str  # what counts this process's open SSE reads of it (Services.admit_stream)
    message: Callable[[Entry], bytes]
    max_bytes: int  # the most bytes of messages one read answers with


def stream_source(engine: Engine, name: str, meta: StreamMeta) -> Source:
    return Source(
        engine.streams.view(name, meta.uid),
        meta.ct,
        meta.ctn,
        hashlib.blake2b(name.encode(), digest_size=8).hexdigest(),
        meta.sliding_ttl,
        closable=True,
        stream_key="/" + name,  # never a conversation id: those have no "/"
        message=entry_data,
        max_bytes=engine.settings.ds_read_max_bytes,
    )


def conversation_source(engine: Engine, cid: str) -> Source:
    """A conversation, read-only: each event a JSON message. Its SSE reads count together with
    the conversation's own SSE streams."""
    return Source(
        engine.streams.conversation_view(cid),
        JSON,
        JSON,
        "c:" + cid,
        None,
        closable=False,
        stream_key=cid,
        message=conversation_message,
        max_bytes=engine.settings.ds_read_max_bytes,
    )


class Read:
    """One read's parameters, checked. ``expires_at`` (Unix seconds, leeway included) is when
    the token that opened it expires: no live read outlives it."""

    def __init__(
        self,
        start: StreamPos,
        *,
        now: bool,
        from_start: bool,
        client_cursor: str | None,
        expires_at: float | None = None,
    ):
        self.start = start
        self.now = now
        self.from_start = from_start
        self.client_cursor = client_cursor
        self.expires_at = expires_at

    def window(self, seconds: float) -> tuple[float, bool]:
        """How long a live read may wait from now, and whether the token's expiry (rather than
        ``seconds``) is what ends it."""
        if self.expires_at is None:
            return seconds, False
        left = self.expires_at - time.time()
        return (left, True) if left < seconds else (seconds, False)

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at


def token_expired() -> ApiError:
    return ApiError(TOKEN_EXPIRED, "the token expired while the read waited; use a fresh one")


class ReadResult:
    """Messages read from one position: their bytes, and the position after them."""

    def __init__(self, messages: list[bytes], next_pos: StreamPos) -> None:
        self.messages = messages
        self.next_pos = next_pos


async def read_batch(
    source: Source, state: State, start: StreamPos, count: int, *, from_start: bool
) -> ReadResult:
    """At most ``count`` messages and ``source.max_bytes`` bytes of them past ``start``.
    Raises 410 when retention dropped entries past ``start``: never later data instead."""
    if start >= state.tail:
        return ReadResult([], start)
    chunk = await source.view.read(start, count, source.max_bytes)
    if chunk.gone:
        raise ApiError(STREAM_NOT_FOUND, "the stream was deleted")
    oldest = chunk.first_retained
    if oldest is not None and start < oldest and not from_start:
        # An offset before the oldest entry kept names data retention dropped (trimming drops
        # a prefix); the zero offset only when something was dropped at all.
        if start != ORIGIN or await source.view.trimmed():
            raise ApiError(OFFSET_GONE, "retention dropped the data at this offset")
    messages = [source.message(entry) for entry in chunk.entries]
    next_pos = chunk.entries[-1].pos if chunk.entries else start
    return ReadResult(messages, next_pos)


async def long_poll(
    hub: Hub, source: Source, read: Read, count: int, timeout: float
) -> tuple[ReadResult | None, State]:
    """The first data past the read's position, or None when ``timeout`` passed without any
    (or the stream closed, or the process is draining). A wait that the token's expiry ends
    answers 401 ``token_expired``, and so does data found once it has expired."""
    window, by_expiry = read.window(timeout)
    async with hub.subscribe_channel(source.view.live) as subscription:
        with anyio.move_on_after(max(0.0, window)) as waited:
            while True:
                state = await source.view.state()
                if state is None:
                    raise ApiError(STREAM_NOT_FOUND, "the stream was deleted")
                batch = await read_batch(
                    source, state, read.start, count, from_start=read.from_start
                )
                if read.expired:
                    raise token_expired()
                if batch.messages or state.closed:
                    return (batch if batch.messages else None), state
                items = await subscription.receive()
                if CLOSED in items:
                    break
        if waited.cancelled_caught and by_expiry:
            raise token_expired()
    state = await source.view.state()
    if state is None:
        raise ApiError(STREAM_NOT_FOUND, "the stream was deleted")
    return None, state


async def sse_events(
    hub: Hub, source: Source, read: Read, count: int, seconds: float, keepalive: bytes
) -> AsyncIterator[bytes]:
    """Data and control events from the read's position until the stream closes, is deleted,
    ``seconds`` pass (the client reconnects at its offset), the process drains, or the token
    that opened it expires (then a last ``error`` event says ``token_expired``)."""
    position = read.start
    from_start = read.from_start
    announced: StreamPos | None = None  # the position of the last control event sent
    window, by_expiry = read.window(seconds)
    async with hub.subscribe_channel(source.view.live) as subscription:
        with anyio.move_on_after(max(0.0, window)) as open_for:
            fresh = False  # True while the notices have carried this reader to the tail
            while True:
                if not fresh:
                    state = await source.view.state()
                    if state is None:
                        return
                    try:
                        batch = await read_batch(
                            source, state, position, count, from_start=from_start
                        )
                    except ApiError:
                        # Retention overtook this reader, or the stream it began with is gone:
                        # its reconnect gets the 410 or the 404.
                        return
                    if batch.messages:
                        position = batch.next_pos
                        from_start = False
                        up_to_date = position >= state.tail
                        closed = state.closed and up_to_date
                        yield data_event(source.media_type, batch.messages) + control_event(
                            position,
                            up_to_date=up_to_date,
                            closed=closed,
                            client_cursor=read.client_cursor,
                        )
                        announced = position
                        if closed:
                            return
                        if not up_to_date:
                            continue
                    elif announced != position or state.closed:
                        yield control_event(
                            position,
                            up_to_date=True,
                            closed=state.closed,
                            client_cursor=read.client_cursor,
                        )
                        announced = position
                        if state.closed:
                            return
                items = await subscription.receive()
                if CLOSED in items:
                    return
                if not items:
                    fresh = True
                    yield keepalive
                    continue
                followed = _follow(source, items, position)
                if followed is None:
                    fresh = False  # a gap, a close or a delete: Redis says what happened
                    continue
                messages, position, closed = followed
                yield data_event(source.media_type, messages) + control_event(
                    position, up_to_date=True, closed=closed, client_cursor=read.client_cursor
                )
                announced = position
                if closed:
                    return
                fresh = True
    if open_for.cancelled_caught and by_expiry:
        yield TOKEN_EXPIRED_EVENT


def _follow(
    source: Source, items: list[LiveBatch | object], position: StreamPos
) -> tuple[list[bytes], StreamPos, bool] | None:
    """The messages of notices that continue exactly from ``position``, the position after
    them, and whether they closed the stream; None when Redis must be read instead."""
    messages: list[bytes] = []
    closed = False
    for item in items:
        if not isinstance(item, LiveBatch) or item.after != position or not item.entries:
            return None
        for entry in item.entries:
            messages.append(source.message(entry))
            position = entry.pos
            closed = closed or (source.closable and entry.run_id == b"c")
    return messages, position, closed
