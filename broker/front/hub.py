"""The shared live tail: one blocking ``XREAD`` per front process serves every local client.

The hub keeps, for every stream that has local subscribers, the position it has read up to, and
reads all of them in one command on one dedicated connection. Each batch it reads goes to every
subscriber of that stream together with the position it was read *after*; a subscriber whose own
position is older than that knows there may be a gap and fills it from Redis itself. That single
rule makes the replay-to-live handoff, late joiners and slow clients exact without locks.

The position the hub reads after comes from the stream, never from a client: a new tail starts
at the stream's own last entry, looked up when the tail is created. A client holding a position
past the end (a forged id) then only waits for itself, never for the other clients of the stream.
Every subscriber, as soon as its tail has a position, gets an empty batch read after it: one
whose own position is older (entries landed while it replayed, or while the tail started) reads
the difference from Redis at once, instead of waiting for an entry that may never come.

A subscriber that falls too far behind is not buffered without bound: its queue is dropped and
replaced by ``GAP``, and it catches up from Redis at its own pace.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, NamedTuple

import anyio
import redis.asyncio as aioredis
import redis.exceptions

from broker.core.entries import Entry, entry_from_redis
from broker.core.ids import ORIGIN, StreamPos, format_stream_id, parse_stream_id
from broker.core.keys import Keys

log = logging.getLogger("broker.front.hub")


class Batch(NamedTuple):
    after: StreamPos  # the position the hub read after: the batch holds every entry past it
    entries: list[Entry]


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


GAP: Final = _Marker("GAP")  # the subscriber fell behind: read from Redis up to the end
CLOSED: Final = _Marker("CLOSED")  # the process is draining: end the stream now


class Subscription:
    """One client's inbox of live batches, bounded in frames."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._queue: deque[Batch | _Marker] = deque()
        self._queued = 0
        self._wakeup: anyio.Event | None = None

    def deliver(self, batch: Batch) -> None:
        self._queued += len(batch.entries)
        if self._queued > self._limit:
            log.debug("a client fell %d frames behind; it continues from Redis", self._queued)
            self._queue.clear()
            self._queue.append(GAP)
            self._queued = 0
        else:
            self._queue.append(batch)
        self._wake()

    def close(self) -> None:
        self._queue.append(CLOSED)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def receive(self, timeout: float) -> list[Batch | _Marker]:
        """Everything queued so far; waits up to ``timeout`` for something, else returns []."""
        if not self._queue:
            self._wakeup = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._wakeup.wait()
            self._wakeup = None
        items = list(self._queue)
        self._queue.clear()
        self._queued = 0
        return items


class _Tail:
    __slots__ = ("cursor", "subscribers")

    def __init__(self) -> None:
        # Where the shared read continues; None until the stream's last entry has been looked up.
        self.cursor: StreamPos | None = None
        self.subscribers: set[Subscription] = set()


class Hub:
    def __init__(
        self,
        reader: aioredis.Redis,
        writer: aioredis.Redis,
        keys: Keys,
        *,
        queue_frames: int,
        read_count: int = 1000,
        block_ms: int = 5000,
        batch_seconds: float = 0.0,
    ) -> None:
        """``reader`` is dedicated to the blocking read; ``writer`` is the shared pool."""
        self._reader = reader
        self._writer = writer
        self._queue_frames = queue_frames
        self._read_count = read_count
        self._block_ms = block_ms
        self._batch_seconds = batch_seconds
        self._tails: dict[bytes, _Tail] = {}
        self._wake_key = keys.wakeup(uuid.uuid4().hex).encode()
        self._wake_cursor = "0-0"
        self._wake_pending = False
        self._changed = anyio.Event()
        self._closed = False

    def close(self) -> None:
        """Tell every subscriber, now and later, to end its stream: the process is draining."""
        self._closed = True
        for tail in self._tails.values():
            for subscription in tail.subscribers:
                subscription.close()

    @property
    def stream_count(self) -> int:
        return len(self._tails)

    @asynccontextmanager
    async def subscribe(self, key: str) -> AsyncIterator[Subscription]:
        """Receive live entries of ``key``: every batch says which position it was read after,
        and the subscriber reads whatever lies between its own position and that from Redis."""
        subscription = Subscription(self._queue_frames)
        bkey = key.encode()
        tail = self._tails.get(bkey)
        is_new = tail is None
        if tail is None:
            tail = self._tails[bkey] = _Tail()
        tail.subscribers.add(subscription)
        if tail.cursor is not None:
            subscription.deliver(Batch(tail.cursor, []))
        if self._closed:
            subscription.close()
        try:
            if is_new:
                await self._wake()
            yield subscription
        finally:
            tail.subscribers.discard(subscription)
            if not tail.subscribers and self._tails.get(bkey) is tail:
                del self._tails[bkey]

    async def _wake(self) -> None:
        """Make the reader start a new read that includes the streams added since its last one."""
        self._changed.set()
        if self._wake_pending:
            return
        self._wake_pending = True
        sent = False
        try:
            async with self._writer.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {b"w": b"1"}, maxlen=1, approximate=False)
                pipe.pexpire(self._wake_key, 60_000)
                await pipe.execute()
            sent = True
        except redis.exceptions.RedisError:
            # The reader's timeout bounds the delay instead; the subscriber loses nothing.
            log.warning("could not wake the shared tail", exc_info=True)
        finally:
            if not sent:
                self._wake_pending = False

    async def run(self) -> None:
        """Read and fan out until cancelled; survives Redis outages by retrying from its cursors."""
        backoff = 0.05
        while True:
            if not self._tails:
                self._changed = anyio.Event()
                await self._changed.wait()
                continue
            self._changed = anyio.Event()
            self._wake_pending = False
            try:
                await self._start_new_tails()
                reading = {
                    key: (tail, tail.cursor)
                    for key, tail in self._tails.items()
                    if tail.cursor is not None
                }
                streams: dict[bytes, str] = {self._wake_key: self._wake_cursor}
                for key, (_, cursor) in reading.items():
                    streams[key] = format_stream_id(cursor)
                response = await self._reader.xread(
                    streams, count=self._read_count, block=self._block_ms
                )
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                log.warning("shared tail lost Redis; retrying in %.2fs", backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            for key, entries in response or ():
                if key == self._wake_key:
                    self._wake_cursor = entries[-1][0].decode()
                    continue
                if key not in reading or not entries:
                    continue
                tail, cursor = reading[key]
                batch = Batch(cursor, [entry_from_redis(i, f) for i, f in entries])
                tail.cursor = batch.entries[-1].pos
                for subscription in tail.subscribers:
                    subscription.deliver(batch)
            if response and self._batch_seconds:
                # Entries keep arriving: a moment's pause lets the next read carry many of them,
                # for all streams at once, instead of one read per entry.
                await anyio.sleep(self._batch_seconds)

    async def _start_new_tails(self) -> None:
        """Set each new tail's cursor to its stream's last entry: one pipelined read for all."""
        new = [(key, tail) for key, tail in self._tails.items() if tail.cursor is None]
        if not new:
            return
        async with self._reader.pipeline(transaction=False) as pipe:
            for key, _ in new:
                pipe.xrevrange(key, count=1)
            lasts = await pipe.execute()
        for (_, tail), last in zip(new, lasts, strict=True):
            cursor = parse_stream_id(last[0][0]) if last else ORIGIN
            tail.cursor = cursor
            for subscription in tail.subscribers:
                subscription.deliver(Batch(cursor, []))
