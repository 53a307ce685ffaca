"""A client's feed: replay from its position, then live entries, with no gap and no duplicate.

The feed owns exactly one number, the position of the last entry it sent. Everything it sends
comes after that position, in stream order. It subscribes to the live notices before it reads
the stream, so nothing appended in between is missed; when the hub hands it a batch that
follows a later position, or tells it something may be missing, it reads the range from Redis
first.

A position the feed has sent is an entry of the stream. If a batch or a read shows that entry
is no longer there (a failover lost writes that had been acknowledged, or retention trimmed
them while the client was slow), the client is told to ``reset`` and gets everything retained,
rather than a silent gap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import NamedTuple, Protocol

import anyio
import msgspec
from prometheus_client import Counter

from broker.core.entries import Entry
from broker.core.events import TERMINAL_NAMES, Reset, StreamEnd
from broker.core.ids import ORIGIN, StreamPos, format_stream_id
from broker.engine import UNAVAILABLE
from broker.engine.conversations import Conversations
from broker.front.http.metrics import FrontMetrics
from broker.front.streaming.hub import CLOSED, DELETED, Hub, LiveBatch
from broker.front.streaming.sse import KEEPALIVE, retry_frame, unstored_frame

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
DRAIN_RETRY_MS = 50
_FIRST_BATCH = 50
TOKEN_EXPIRED = unstored_frame(
    "error",
    _encoder.encode(
        StreamEnd(
            "token_expired",
            "the token that opened this stream has expired; reconnect with a fresh one and "
            "your last event id",
        )
    ),
)

CONVERSATION_DELETED = unstored_frame(
    "error",
    _encoder.encode(StreamEnd("conversation_deleted", "this conversation was deleted")),
)


class FrameWriter(Protocol):
    """How an adapter writes a feed in its own protocol instead of the broker's SSE frames."""

    def entry(self, entry: Entry) -> bytes:
        """The bytes for one entry of the feed (may be empty)."""
        ...

    def token_expired(self) -> bytes:
        """The last bytes of a stream whose token expired."""
        ...

    def draining(self) -> bytes:
        """The last bytes of a stream this process ends because it is shutting down."""
        ...

    def deleted(self) -> bytes:
        """The last bytes of a stream whose conversation was deleted."""
        ...


class Openings:
    """Streams still waiting for their first events.

    While there are any, later replay reads wait their turn: in a storm of reconnects every
    client's first events leave before anyone's history, which is what a user sees first.
    """

    __slots__ = ("_count", "_none")

    def __init__(self) -> None:
        self._count = 0
        self._none = anyio.Event()
        self._none.set()

    def open(self) -> Callable[[], None]:
        """Count one more opening stream; returns its release, which is safe to call twice."""
        self._count += 1
        if self._count == 1:
            self._none = anyio.Event()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._count -= 1
                if not self._count:
                    self._none.set()

        return release

    async def none_waiting(self) -> None:
        while self._count:
            await self._none.wait()


def _nothing() -> None:
    pass


class StartPoint(NamedTuple):
    position: StreamPos
    reset: bytes | None  # a `reset` frame to send before the replay, when one is due


async def resolve_start(
    conversations: Conversations, cid: str, last_event_id: StreamPos | None
) -> StartPoint | None:
    """Where a client holding ``last_event_id`` resumes; None when the conversation is unknown.

    A position before the retained history (trimmed away), before the conversation's first
    entry (an older conversation under the same id), or past its last entry (not from this
    stream) cannot be resumed exactly: the client is told to reset and gets all that is retained.
    """
    resuming = last_event_id is not None and last_event_id != ORIGIN
    found = await conversations.positions(cid, last_event_id if resuming else None)
    if found is None:
        return None
    if last_event_id is None or not resuming:
        return StartPoint(ORIGIN, None)
    origin = found.first_id or found.earliest
    reason = None
    if last_event_id > found.latest or last_event_id < origin:
        reason = "unknown_position"
    elif last_event_id < found.earliest and found.earliest > origin:
        reason = "trimmed"
    elif not found.held_is_stored:
        # Within the stream's span but not one of its entries: no client was ever sent it, or
        # it was lost (acknowledged writes a failover did not keep).
        reason = "unknown_position"
    if reason is None:
        return StartPoint(last_event_id, None)
    earliest = format_stream_id(found.earliest)
    data = _encoder.encode(Reset(reason=reason, earliest_event_id=earliest))
    return StartPoint(ORIGIN, unstored_frame("reset", data))


async def frames_of(
    feed: Feed, metrics: FrontMetrics, *, prefix: bytes = b"", unavailable: bytes = b""
) -> AsyncIterator[bytes]:
    """A response body: ``prefix``, then the feed's frames. When Redis becomes unreachable the
    stream ends cleanly (after ``unavailable``, a protocol's way of saying so): the client
    reconnects from its last position and loses nothing."""
    if prefix:
        yield prefix
    try:
        async with aclosing(feed.frames()) as frames:
            async for chunk in frames:
                if chunk:
                    yield chunk
    except UNAVAILABLE:
        log.warning("ending a stream: Redis unreachable")
        feed.ended = "redis_unavailable"
        metrics.redis_errors.inc()
        if unavailable:
            yield unavailable


class Feed:
    """The frames one client receives; ``run_id`` narrows it to one run, ended by its terminal."""

    def __init__(
        self,
        conversations: Conversations,
        hub: Hub,
        cid: str,
        position: StreamPos,
        *,
        batch: int,
        first_reads: anyio.CapacityLimiter,
        catch_up: anyio.CapacityLimiter,
        run_id: str | None = None,
        expires_at: float | None = None,
        writer: FrameWriter | None = None,
        exact: bool = False,
        openings: Openings | None = None,
        opened: Callable[[], None] = _nothing,
        metrics: FrontMetrics | None = None,
    ) -> None:
        """``expires_at`` (Unix seconds) is when the token that opened the stream expires;
        ``writer`` writes the frames of an adapter's protocol (None: the broker's SSE);
        ``exact``: ``position`` is an entry of the stream (a checked Last-Event-ID);
        ``opened`` is called once the first read is done (see ``Openings``); ``metrics`` counts
        what it sends."""
        self._conversations = conversations
        self._hub = hub
        self._cid = cid
        self.position = position
        self._batch = batch
        self._run = run_id.encode() if run_id is not None else None
        self._first_reads = first_reads
        self._catch_up_limiter = catch_up
        self._openings = openings
        self._opened = opened
        self._first_read = True
        self._expires_at = expires_at
        self._writer = writer
        self._exact = exact
        self.finished = False
        # For the access log line at close: events sent, why the stream ended, and how often
        # the client fell behind the live path.
        self.sent = 0
        self.ended = "client_gone"
        self.fell_behind = 0
        self._metrics = metrics
        # Bound once: counting is one increment per batch of entries.
        self._replayed = metrics.events_replay if metrics is not None else None
        self._live = metrics.events_live if metrics is not None else None

    def _take(self, entries: list[Entry], out: list[bytes], counter: Counter | None = None) -> None:
        """Append the frames of entries past our position; stop after the run's terminal.
        ``counter`` (a bound Prometheus child) counts the entries taken."""
        before = len(out)
        self._take_entries(entries, out, self._run, self._writer)
        taken = len(out) - before
        if taken:
            self.sent += taken
            if counter is not None:
                counter.inc(taken)

    def _take_entries(
        self, entries: list[Entry], out: list[bytes], run: bytes | None, writer: FrameWriter | None
    ) -> None:
        for entry in entries:
            if entry.pos <= self.position:
                continue
            self.position = entry.pos
            self._exact = True
            if run is None:
                out.append(entry.frame if writer is None else writer.entry(entry))
            elif entry.run_id == run:
                out.append(entry.frame if writer is None else writer.entry(entry))
                if entry.name in TERMINAL_NAMES:
                    self.finished = True
                    return

    async def _read(self) -> list[Entry]:
        """One batch from Redis. A client's first read and its later ones have limiters of
        their own, so a storm of long replays cannot delay every new client's first event
        behind all of them."""
        if self._first_read:
            # Small, so the first bytes leave quickly however many clients arrive at once.
            self._first_read = False
            try:
                async with self._first_reads:
                    return await self._conversations.read_after(
                        self._cid, self.position, _FIRST_BATCH
                    )
            finally:
                self._opened()
        if self._openings is not None:
            await self._openings.none_waiting()
        async with self._catch_up_limiter:
            return await self._conversations.read_after(self._cid, self.position, self._batch)

    async def _catch_up(self, verify: bool = False) -> AsyncIterator[bytes]:
        """Read from Redis, a batch at a time, until the end of what is stored.

        With ``verify``, first check that the last entry sent is still stored; if not, the
        client gets ``reset`` and everything retained."""
        if verify and self._exact:
            async with self._catch_up_limiter:
                stored = await self._conversations.is_stored(self._cid, self.position)
            if not stored:
                yield await self._reset()
        while not self.finished:
            first = self._first_read
            raw = await self._read()
            out: list[bytes] = []
            self._take(raw, out, self._replayed)
            if out:
                yield b"".join(out)
            if len(raw) < (_FIRST_BATCH if first else self._batch):
                return

    async def _reset(self) -> bytes:
        """Start over from the beginning of what is retained; the frame that says so."""
        earliest = await self._conversations.earliest(self._cid)
        reason = (
            "trimmed" if earliest is not None and earliest > self.position else "unknown_position"
        )
        earliest_id = format_stream_id(earliest) if earliest is not None else None
        self.position = ORIGIN
        self._exact = False
        if self._metrics is not None:
            self._metrics.resets.inc()
        return unstored_frame("reset", _encoder.encode(Reset(reason, earliest_id)))

    def _behind(self, batch: LiveBatch) -> bool:
        """Whether the batch leaves something to read first: it follows a later position than
        ours, or it spans our position without containing it (our last entry is gone)."""
        if batch.after == self.position:
            return False
        if batch.after > self.position:
            return True
        entries = batch.entries
        return (
            self._exact
            and bool(entries)
            and entries[-1].pos > self.position
            and all(entry.pos != self.position for entry in entries)
        )

    async def frames(self) -> AsyncIterator[bytes]:
        if self.finished:
            self.ended = "terminal"
            return
        # Subscribed first, read second: whatever is appended after the read is in the queue.
        async with self._hub.subscribe(self._cid) as subscription:
            try:
                async for chunk in self._catch_up():
                    yield chunk
                if self.finished:
                    return
                while True:
                    items = await subscription.receive()
                    # Checked once per wake-up, not per event: at the latest at the next keepalive.
                    if self._expires_at is not None and time.time() >= self._expires_at:
                        self.ended = "token_expired"
                        yield (
                            TOKEN_EXPIRED if self._writer is None else self._writer.token_expired()
                        )
                        return
                    if not items:
                        yield KEEPALIVE
                        continue
                    out: list[bytes] = []
                    for item in items:
                        if item is CLOSED:
                            self.ended = "drain"
                            # Reconnect soon, elsewhere: the next stream sets `retry:` back.
                            ending = (
                                retry_frame(DRAIN_RETRY_MS)
                                if self._writer is None
                                else self._writer.draining()
                            )
                            yield b"".join(out) + ending
                            return
                        if item is DELETED:
                            self.ended = "deleted"
                            writer = self._writer
                            ending = CONVERSATION_DELETED if writer is None else writer.deleted()
                            yield b"".join(out) + ending
                            return
                        if not isinstance(item, LiveBatch) or self._behind(item):
                            # Something may be missing (GAP), or the batch starts past our
                            # position: read the range from Redis before taking the batch.
                            if out:
                                yield b"".join(out)
                                out = []
                            async for chunk in self._catch_up(verify=True):
                                yield chunk
                        if isinstance(item, LiveBatch):
                            self._take(item.entries, out, self._live)
                        if self.finished:
                            break
                    if out:
                        yield b"".join(out)
                    if self.finished:
                        return
            finally:
                self.fell_behind = subscription.fell_behind
                if self.finished:
                    self.ended = "terminal"
