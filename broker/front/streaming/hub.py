"""The live path of a front process: the notices of every local conversation, fanned out.

Every append publishes a notice on its conversation's channel (see ``broker.engine.live``). The
hub subscribes to the channels of the conversations that have local clients (one
subscription connection per shard, through ``Subscriber``) and hands each notice, decoded once,
to every client of that conversation, as a batch that says which entry it follows. That
position comes from the stream itself, inside the script that appended, never from a client: a
subscriber whose own position differs reads the missing range from Redis first. That single
rule makes the replay-to-live handoff, late joiners, slow clients and lost notices exact
without locks.

The work per notice is one dictionary lookup and one decode, whatever the number of idle
conversations; a new local conversation costs one SUBSCRIBE and the last client leaving one
UNSUBSCRIBE, both batched. A subscriber that falls too far behind is not buffered without
bound: its queue is dropped and replaced by ``GAP``, and it catches up from Redis at its own
pace. When a subscription was interrupted, every subscriber of its channels gets ``GAP`` too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, NamedTuple

import anyio
import msgspec

from broker.core.entries import Entry
from broker.core.ids import StreamPos
from broker.engine import Engine
from broker.engine.live import DELETED_NOTICE, decode_notice

log = logging.getLogger(__name__)


def _nothing() -> None:
    pass


class LiveBatch(NamedTuple):
    after: StreamPos  # the stream's newest entry before these: the batch holds everything past it
    entries: list[Entry]


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


GAP: Final = _Marker("GAP")  # something may be missing: read from Redis up to the end
CLOSED: Final = _Marker("CLOSED")  # the process is draining: end the stream now
DELETED: Final = _Marker("DELETED")  # the conversation was deleted: end the stream now


class Subscription:
    """One client's inbox of live batches, bounded in frames.

    Thousands of these wait at once, most of them idle: an idle one holds an empty list and,
    while its client waits, one future. No timer per wait: the hub's keepalive sweep wakes the
    ones that have been quiet too long (an asyncio ``Event``, a cancel scope or a timer per
    wait would each cost memory per open stream and work per event).
    """

    __slots__ = (
        "_limit",
        "_queue",
        "_queued",
        "_waiter",
        "_quiet_since",
        "_on_fell_behind",
        "fell_behind",
    )

    def __init__(self, limit: int, on_fell_behind: Callable[[], None] = _nothing) -> None:
        self._limit = limit
        self._on_fell_behind = on_fell_behind
        self.fell_behind = 0
        self._queue: list[LiveBatch | _Marker] = []
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._quiet_since = time.monotonic()

    def deliver(self, batch: LiveBatch) -> None:
        self._queued += len(batch.entries)
        if self._queued > self._limit:
            log.debug("a client fell %d frames behind; it continues from Redis", self._queued)
            self.fell_behind += 1
            self._on_fell_behind()
            self.gap()
            return
        self._queue.append(batch)
        self._wake()

    def gap(self) -> None:
        """Whatever is queued is superseded: the client reads Redis to the end instead."""
        self._queue = [GAP]
        self._queued = 0
        self._wake()

    def close(self) -> None:
        self._queue.append(CLOSED)
        self._wake()

    def deleted(self) -> None:
        self._queue.append(DELETED)
        self._wake()

    def nudge(self, now: float, quiet: float) -> None:
        """Wake a client that has waited ``quiet`` seconds with nothing: it sends a keepalive."""
        if self._waiter is not None and now - self._quiet_since >= quiet:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def receive(self) -> list[LiveBatch | _Marker]:
        """Everything queued so far; waits for something, or returns [] when nudged."""
        if not self._queue:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        self._quiet_since = time.monotonic()
        items = self._queue
        self._queue = []
        self._queued = 0
        return items


class Hub:
    def __init__(
        self,
        engine: Engine,
        *,
        queue_frames: int,
        keepalive_seconds: float,
        ping_seconds: float = 5.0,
        on_fell_behind: Callable[[], None] = _nothing,
        on_reconnect: Callable[[], None] = _nothing,
    ) -> None:
        """The hub opens its own subscription connections (the engine's subscriber).
        ``on_fell_behind`` and ``on_reconnect`` count a client switched to catch-up reads and a
        subscription connection opened again."""
        self._on_fell_behind = on_fell_behind
        self._engine = engine
        self._keepalive = keepalive_seconds
        self._queue_frames = queue_frames
        self._streams: dict[bytes, set[Subscription]] = {}
        self._subscriber = engine.subscriber(
            on_message=self._on_notice,
            on_resync=self._on_resync,
            ping_seconds=ping_seconds,
            on_reconnect=on_reconnect,
        )
        self._closed = False

    def close(self) -> None:
        """Tell every subscriber, now and later, to end its stream: the process is draining."""
        self._closed = True
        for subscriptions in self._streams.values():
            for subscription in subscriptions:
                subscription.close()

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._subscriber.run)
            tasks.start_soon(self._keep_alive)

    async def _keep_alive(self) -> None:
        """A few times per keepalive period, wake the clients that have been quiet for one."""
        while True:
            await anyio.sleep(self._keepalive / 4)
            now = time.monotonic()
            for subscriptions in self._streams.values():
                for subscription in subscriptions:
                    subscription.nudge(now, self._keepalive)

    @asynccontextmanager
    async def subscribe(self, cid: str) -> AsyncIterator[Subscription]:
        """Receive the live entries of ``cid``: returns once the subscription is in place, so
        anything appended after that arrives here; read the stream only after this."""
        async with self.subscribe_channel(self._engine.conversations.channel(cid)) as sub:
            yield sub

    @asynccontextmanager
    async def subscribe_channel(self, channel: bytes) -> AsyncIterator[Subscription]:
        """The same, for any stream whose appends publish the live notice on ``channel``."""
        subscription = Subscription(self._queue_frames, self._on_fell_behind)
        subscriptions = self._streams.get(channel)
        if subscriptions is None:
            subscriptions = self._streams[channel] = set()
        subscriptions.add(subscription)
        if self._closed:
            subscription.close()
        try:
            await self._subscriber.subscribe(channel)
            yield subscription
        finally:
            subscriptions.discard(subscription)
            if not subscriptions and self._streams.get(channel) is subscriptions:
                del self._streams[channel]
                self._subscriber.unsubscribe(channel)

    def _on_notice(self, channel: bytes, data: bytes) -> None:
        subscriptions = self._streams.get(channel)
        if not subscriptions:
            return
        if data == DELETED_NOTICE:
            for subscription in subscriptions:
                subscription.deleted()
            return
        try:
            after, entries = decode_notice(data)
        except (msgspec.DecodeError, ValueError):
            log.error("an unreadable live notice on %r; its clients re-read the stream", channel)
            self._on_resync(channel)
            return
        batch = LiveBatch(after, entries)
        for subscription in subscriptions:
            subscription.deliver(batch)

    def _on_resync(self, channel: bytes) -> None:
        for subscription in self._streams.get(channel, ()):
            subscription.gap()
