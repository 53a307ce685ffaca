"""Reads: catch-up, long-poll and SSE, over any ``Source``.

Live reads wait on the front's hub like the conversation streams do: a subscription to the
stream's channel, taken before the stream is read, so nothing appended after that read can be
missed; each notice (or its loss, ``GAP``) wakes the reader, who reads Redis from its own
position. No reader blocks in Redis, and the process's drain (``CLOSED``) ends every wait.
"""

from __future__ import annotations

import base64
import random
import re
import time
from collections.abc import AsyncIterator

import anyio
import msgspec

from broker.core.entries import entry_data
from broker.core.ids import StreamPos
from broker.engine.streams import DurableStore
from broker.front.http.errors import ApiError
from broker.front.streaming.hub import CLOSED, Hub
from broker.front.streaming.hub import Batch as LiveBatch
from broker.front.streaming.sources import JSON, Source, State
from broker.protocols.durable_streams import offsets
from broker.protocols.durable_streams.wire import Control

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"cross-origin-resource-policy", b"cross-origin"),
]
BASE64 = (b"stream-sse-data-encoding", b"base64")

_control = msgspec.json.Encoder()
_LINES = re.compile(rb"\r\n|\r|\n")
# Cursors count 20-second intervals from 2024-10-09T00:00:00Z, as the protocol suggests.
_CURSOR_EPOCH = 1728432000.0
_CURSOR_INTERVAL = 20.0


def cursor(previous: str | None) -> str:
    """The current interval; past a cursor the client already holds when it is not behind it,
    so the cache key of a repeated request always changes."""
    current = int((time.time() - _CURSOR_EPOCH) // _CURSOR_INTERVAL)
    if (
        previous is not None
        and previous.isascii()
        and previous.isdigit()
        and len(previous) <= 16
        and int(previous) >= current
    ):
        jitter = random.randint(1, 3600)  # noqa: S311 (spreads caches, guards nothing)
        current = int(previous) + max(1, int(jitter // _CURSOR_INTERVAL))
    return str(current)


def is_text(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type == JSON


class Read:
    """One read's parameters, checked."""

    def __init__(self, start: StreamPos, *, now: bool, from_start: bool, client_cursor: str | None):
        self.start = start
        self.now = now
        self.from_start = from_start
        self.client_cursor = client_cursor


def parse_offset(raw: str | None, tail: StreamPos) -> tuple[StreamPos, bool, bool]:
    """(position, is ``now``, is the stream's beginning)."""
    if raw is None or raw == "-1":
        return offsets.ZERO_POS, False, True
    if raw == "now":
        return tail, True, False
    pos = offsets.decode(raw)
    if pos is None:
        raise ApiError(
            400, "invalid_offset", "offset must be -1, now, or an offset this server sent"
        )
    if pos > tail:
        raise ApiError(400, "invalid_offset", "offset is past the end of the stream")
    return pos, False, False


class Batch:
    """Messages read from one position: their bytes, and the position after them."""

    def __init__(self, messages: list[bytes], next_pos: StreamPos) -> None:
        self.messages = messages
        self.next_pos = next_pos


async def read_batch(
    store: DurableStore,
    source: Source,
    state: State,
    start: StreamPos,
    count: int,
    *,
    from_start: bool,
) -> Batch:
    """Raises 410 when retention dropped entries past ``start``: never later data instead."""
    if start >= state.tail:
        return Batch([], start)
    chunk = await store.read(source.data_key, start, count)
    oldest = chunk.first_retained
    if oldest is not None and start < oldest and not from_start:
        # An offset before the oldest entry kept names data retention dropped (trimming drops
        # a prefix); the zero offset only when something was dropped at all.
        if start != offsets.ZERO_POS or await store.trimmed(source.data_key):
            raise ApiError(410, "offset_gone", "retention dropped the data at this offset")
    messages = [source.message(pos, fields) for pos, fields in chunk.entries]
    next_pos = chunk.entries[-1][0] if chunk.entries else start
    return Batch(messages, next_pos)


def body_of(source: Source, messages: list[bytes]) -> bytes:
    if source.media_type == JSON:
        return b"[" + b",".join(messages) + b"]"
    return b"".join(messages)


def etag(source: Source, start: StreamPos, end: StreamPos, closed: bool) -> str:
    suffix = ":c" if closed else ""
    return f'"{source.etag_id}:{offsets.encode(start)}:{offsets.encode(end)}{suffix}"'


def read_headers(
    source: Source, next_pos: StreamPos, *, up_to_date: bool, closed: bool, cursor_value: str | None
) -> dict[str, str]:
    headers = {"Content-Type": source.content_type, "Stream-Next-Offset": offsets.encode(next_pos)}
    if up_to_date:
        headers["Stream-Up-To-Date"] = "true"
    if closed:
        headers["Stream-Closed"] = "true"
    elif cursor_value is not None:
        headers["Stream-Cursor"] = cursor_value
    return headers


async def long_poll(
    store: DurableStore,
    hub: Hub,
    source: Source,
    read: Read,
    count: int,
    timeout: float,
) -> tuple[Batch | None, State]:
    """The first data past the read's position, or None when ``timeout`` passed without any
    (or the stream closed, or the process is draining)."""
    async with hub.subscribe_channel(source.live) as subscription:
        with anyio.move_on_after(timeout):
            while True:
                state = await source.state()
                if state is None:
                    raise ApiError(404, "stream_not_found", "the stream was deleted")
                batch = await read_batch(
                    store, source, state, read.start, count, from_start=read.from_start
                )
                if batch.messages or state.closed:
                    return (batch if batch.messages else None), state
                items = await subscription.receive()
                if CLOSED in items:
                    break
    state = await source.state()
    if state is None:
        raise ApiError(404, "stream_not_found", "the stream was deleted")
    return None, state


def data_event(source: Source, messages: list[bytes]) -> bytes:
    payload = body_of(source, messages)
    if not is_text(source.media_type):
        payload = base64.b64encode(payload)
    lines = _LINES.split(payload)
    return b"event: data\n" + b"".join(_data_line(line) for line in lines) + b"\n"


def _data_line(line: bytes) -> bytes:
    # A reader drops one space after the colon: only a line that starts with one needs it.
    return (b"data: " if line.startswith(b" ") else b"data:") + line + b"\n"


def control_event(
    next_pos: StreamPos, *, up_to_date: bool, closed: bool, client_cursor: str | None
) -> bytes:
    control = Control(
        offsets.encode(next_pos),
        None if closed else cursor(client_cursor),
        up_to_date or closed,
        closed,
    )
    return b"event: control\ndata:" + _control.encode(control) + b"\n\n"


async def sse_events(
    store: DurableStore,
    hub: Hub,
    source: Source,
    read: Read,
    count: int,
    seconds: float,
    keepalive: bytes,
) -> AsyncIterator[bytes]:
    """Data and control events from the read's position until the stream closes, is deleted,
    ``seconds`` pass (the client reconnects at its offset), or the process drains."""
    position = read.start
    from_start = read.from_start
    announced: StreamPos | None = None  # the position of the last control event sent
    async with hub.subscribe_channel(source.live) as subscription:
        with anyio.move_on_after(seconds):
            fresh = False  # True while the notices have carried this reader to the tail
            while True:
                if not fresh:
                    state = await source.state()
                    if state is None:
                        return
                    try:
                        batch = await read_batch(
                            store, source, state, position, count, from_start=from_start
                        )
                    except ApiError:
                        return  # retention overtook this reader: its reconnect gets the 410
                    if batch.messages:
                        position = batch.next_pos
                        from_start = False
                        up_to_date = position >= state.tail
                        closed = state.closed and up_to_date
                        yield data_event(source, batch.messages) + control_event(
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
                yield data_event(source, messages) + control_event(
                    position, up_to_date=True, closed=closed, client_cursor=read.client_cursor
                )
                announced = position
                if closed:
                    return
                fresh = True


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
            fields = {b"t": entry.name, b"d": entry_data(entry)}
            messages.append(source.message(entry.pos, fields))
            position = entry.pos
            closed = closed or (source.closable and entry.run_id == b"c")
    return messages, position, closed
