"""The tap: every event of every conversation, for a consumer that copies them elsewhere.

It reads what the workers already wrote. The outbox (``broker.engine.outbox``) has one notice per
finished run; the tap takes notices through a Redis consumer group (``tap:<group>``), reads each
run's events from its conversation stream (its user message through its terminal event) and
hands them out one by one. A notice is acknowledged once the consumer asks for the event after
the run's last one, so a consumer that crashes gets the run again, whole: delivery is at least
once, and ``(conversation_id, id)`` identifies an event for de-duplication. Several consumers
of one group share the runs; a run whose consumer stopped responding is taken over after
``claim_after_seconds``.

A run's events come once the run has ended; runs of different conversations (and, after a
crash, of one conversation) may come in any order, and an event's ``id`` orders it within its
conversation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from broker.core.events import Event, decode
from broker.core.settings import Settings
from broker.engine.conversations import Store
from broker.engine.outbox import notice_decoder, read_finished_run, tap_group

log = logging.getLogger("broker.engine.tap")


class TapEvent(msgspec.Struct, frozen=True):
    """One event, as ``broker tap`` prints it: ``data`` is the event's JSON, as stored."""

    conversation_id: str
    id: str
    event: str
    data: msgspec.Raw

    def typed(self) -> Event:
        """The event as its typed Struct (``broker.core.events``)."""
        return decode(self.event, bytes(self.data))


tap_encoder = msgspec.json.Encoder()

Entries = list[tuple[bytes, dict[bytes, bytes] | None]]


class Tap:
    """A consumer of the tap's group ``group``; iterate ``events()``.

    ``consumer`` names this consumer within the group (default: host and process id). A
    consumer restarted under the same name starts with what it was given and never finished;
    under another name, that work goes to whoever claims it after ``claim_after_seconds``.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        group: str = "default",
        consumer: str | None = None,
        claim_after_seconds: float = 60.0,
        block_ms: int = 1000,
    ) -> None:
        self._store = Store(redis, settings)
        self._redis = redis
        self._outbox = self._store.keys.outbox
        self._group = tap_group(group)
        self._consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._claim_after_ms = int(claim_after_seconds * 1000)
        self._block_ms = block_ms
        self._batch = settings.replay_batch

    async def events(self) -> AsyncIterator[TapEvent]:
        """Every event, run by run, until the caller stops; a Redis outage is waited out (the
        run being read then comes again, whole)."""
        backoff = 0.1
        while True:
            try:
                async for event in self._follow():
                    yield event
                    backoff = 0.1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                log.warning("Redis unreachable; the tap goes on in %.1fs", backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _follow(self) -> AsyncIterator[TapEvent]:
        await self._ensure_group()
        # First, what this consumer was given before and never finished.
        after = "0"
        while pending := await self._read(after, count=100):
            async for event in self._runs(pending):
                yield event
            after = pending[-1][0].decode()
        next_claim = 0.0
        while True:
            if time.monotonic() >= next_claim:
                next_claim = time.monotonic() + self._claim_after_ms / 4000
                async for event in self._runs(await self._claim()):
                    yield event
            # One run at a time: a notice read is a notice held, out of the other consumers' reach.
            async for event in self._runs(await self._read(">", count=1, block=self._block_ms)):
                yield event

    async def _ensure_group(self) -> None:
        try:
            # From the oldest notice still kept: a new group copies the retained history too.
            await self._redis.xgroup_create(self._outbox, self._group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, after: str, *, count: int, block: int | None = None) -> Entries:
        try:
            response = await self._redis.xreadgroup(
                self._group, self._consumer, {self._outbox: after}, count=count, block=block
            )
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group()
            return []
        return [entry for _, entries in response or () for entry in entries]

    async def _claim(self) -> Entries:
        _, claimed, *_ = await self._redis.xautoclaim(
            self._outbox, self._group, self._consumer, self._claim_after_ms, "0-0", count=1
        )
        return claimed

    async def _runs(self, notices: Entries) -> AsyncIterator[TapEvent]:
        for notice_id, fields in notices:
            renewed = time.monotonic()
            try:
                notice = notice_decoder.decode(fields[b"n"]) if fields else None
            except (KeyError, msgspec.DecodeError):
                notice = None
            run = None
            if notice is not None:
                run = await read_finished_run(
                    self._store, notice.conversation_id, notice.run_id, self._batch
                )
            if run is None:
                log.warning("outbox entry %s names no run still in Redis: skipped", notice_id)
            for entry_id, entry in run.entries if run is not None else ():
                yield TapEvent(
                    run.conversation_id,  # type: ignore[union-attr]
                    entry_id.decode(),
                    entry[b"t"].decode(),
                    msgspec.Raw(entry[b"d"]),
                )
                # Back here only when the consumer wants the next event: it is alive.
                if time.monotonic() - renewed > self._claim_after_ms / 3000:
                    renewed = time.monotonic()
                    await self._redis.xclaim(
                        self._outbox, self._group, self._consumer, 0, [notice_id], justid=True
                    )
            await self._redis.xack(self._outbox, self._group, notice_id)


def tap_events(
    settings: Settings, *, group: str = "default", consumer: str | None = None
) -> Iterator[TapEvent]:
    """The tap as a plain iterator, for code without an event loop of its own."""
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(settings.redis_url)
    events = Tap(client, settings, group=group, consumer=consumer).events()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(events))
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(events.aclose())
        loop.run_until_complete(client.aclose())
        loop.close()
