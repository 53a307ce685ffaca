"""The tap: every event of every conversation, for a consumer that copies them elsewhere.

It reads what the workers already wrote. The outbox has one notice per finished run (in one
stream per shard; a conversation's notices in one of them, in order); the tap takes notices
through a Redis consumer group (``tap:<group>``) on every shard, reads each run's events from
its conversation stream (its user message through its terminal event) and hands them out one
by one. A notice is acknowledged once the consumer asks for the event after the run's last one,
so a consumer that crashes gets the run again, whole: delivery is at least once, and
``(conversation_id, id)`` identifies an event for de-duplication. Several consumers of one
group share the runs; a run whose consumer stopped responding is taken over after
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
from typing import Any

import msgspec

from broker.core.backoff import Backoff
from broker.core.entries import entry_data, entry_id
from broker.core.events import Event, decode
from broker.core.finished import notice_decoder, tap_group
from broker.core.settings import Settings
from broker.engine import UNAVAILABLE, Engine
from broker.engine.queue import Handed, Leases

log = logging.getLogger(__name__)


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


class Tap:
    """A consumer of the tap's group ``group``; iterate ``events()``.

    ``redis`` is a redis-py asyncio client of the broker's Redis (the caller's, closed by the
    caller). ``consumer`` names this consumer within the group (default: host and process id).
    A consumer restarted under the same name starts with what it was given and never finished;
    under another name, that work goes to whoever claims it after ``claim_after_seconds``.
    """

    def __init__(
        self,
        redis: Any,
        settings: Settings,
        *,
        group: str = "default",
        consumer: str | None = None,
        claim_after_seconds: float = 60.0,
        block_ms: int = 1000,
    ) -> None:
        self._engine = engine = Engine(settings, "tap", client=redis)
        name = consumer or f"{socket.gethostname()}:{os.getpid()}"
        # One consumer per outbox shard; a notice is acknowledged on the shard it came from.
        self._shards = list(engine.outbox.tap_leases(tap_group(group), name).values())
        self._claim_after_ms = int(claim_after_seconds * 1000)
        self._block_ms = block_ms

    async def events(self) -> AsyncIterator[TapEvent]:
        """Every event, run by run, until the caller stops; a Redis outage is waited out (the
        run being read then comes again, whole)."""
        backoff = Backoff()
        while True:
            try:
                async for event in self._follow():
                    yield event
                    backoff.reset()
            except UNAVAILABLE:
                log.warning("Redis unreachable; the tap goes on in %.1fs", backoff.delay)
                await backoff.wait()

    async def _follow(self) -> AsyncIterator[TapEvent]:
        for leases in self._shards:
            await leases.ensure_group()
        # First, what this consumer was given before and never finished.
        for leases in self._shards:
            after = b"0"
            while pending := await leases.read_pending(after, count=100):
                async for event in self._runs(leases, pending):
                    yield event
                after = pending[-1].entry_id
        next_claim = 0.0
        # A round reads each shard without waiting; a round that found nothing waits on one
        # shard, a different one each time, for a share of ``block_ms``.
        wait_ms = max(1, self._block_ms // len(self._shards))
        turn = 0
        while True:
            if time.monotonic() >= next_claim:
                next_claim = time.monotonic() + self._claim_after_ms / 4000
                for leases in self._shards:
                    claimed = await leases.claim_lapsed(self._claim_after_ms, 1)
                    async for event in self._runs(leases, claimed):
                        yield event
            found = False
            for leases in self._shards:
                # One run at a time: a notice read is a notice held, out of the other
                # consumers' reach.
                notices = await leases.read_new(1, None)
                found = found or bool(notices)
                async for event in self._runs(leases, notices):
                    yield event
            if not found:
                turn = (turn + 1) % len(self._shards)
                leases = self._shards[turn]
                async for event in self._runs(leases, await leases.read_new(1, wait_ms)):
                    yield event

    async def _runs(self, leases: Leases, notices: list[Handed]) -> AsyncIterator[TapEvent]:
        for notice_id, payload in notices:
            renewed = time.monotonic()
            try:
                notice = notice_decoder.decode(payload) if payload else None
            except msgspec.DecodeError:
                notice = None
            run = None
            if notice is not None:
                run = await self._engine.outbox.finished_run(notice.conversation_id, notice.run_id)
            if run is None:
                log.warning("outbox entry %s names no run still in Redis: skipped", notice_id)
            for entry in run.entries if run is not None else ():
                yield TapEvent(
                    run.conversation_id,  # type: ignore[union-attr]
                    entry_id(entry),
                    entry.name.decode(),
                    msgspec.Raw(entry_data(entry)),
                )
                # Back here only when the consumer wants the next event: it is alive.
                if time.monotonic() - renewed > self._claim_after_ms / 3000:
                    renewed = time.monotonic()
                    await leases.keep(notice_id)
            await leases.acknowledge(notice_id)


def tap_events(
    settings: Settings, *, group: str = "default", consumer: str | None = None
) -> Iterator[TapEvent]:
    """The tap as a plain iterator, for code without an event loop of its own."""
    loop = asyncio.new_event_loop()
    engine = Engine(settings, "tap", max_connections=2, socket_timeout=None)
    events = Tap(engine.client, settings, group=group, consumer=consumer).events()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(events))
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(events.aclose())
        loop.run_until_complete(engine.aclose())
        loop.close()
