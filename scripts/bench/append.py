"""The benchmark's appender: writes conversation events on a schedule, to whatever is measured.

For the broker (and the naive front, which reads the broker's keys) it opens one run per
conversation and appends deltas through the broker's engine (the accept, start, append and
finish transitions the workers use), so the front sees exactly what a worker would write. Each
delta's text is ``time.time_ns()`` taken just before its append: readers subtract it from their
receipt time, which gives end-to-end latency at sub-millisecond precision (an entry id only
carries milliseconds).

Appends are spread evenly in time across conversations (round robin at a fixed global
interval), as independent generations would be, rather than all conversations at once. The
appends due at one tick go out in one round trip (``Conversations.append`` gathers concurrent
calls into one pipeline, as it does for a worker's runs), at a fraction of the client CPU that
one round trip per append costs, so the appender stays out of the way of what it measures.

The schedule is the same whatever the target; only the writer differs (``AppendPlan.target``):

- ``engine``: the broker's core, as above.
- ``resumable-stream``: the peer's producers, through the routes its server has for the
  benchmark (``scripts/bench/peers/resumable_stream_server.mjs``): a tick's deltas in one POST,
  as the engine writer sends them in one round trip.
- ``ds``: Durable Streams appends, one ``POST /v1/stream/{name}`` per event (the protocol has
  no multi-stream append), those of a tick at once over a few keep-alive connections; every
  message is a 100-byte JSON object whose ``text`` is the time stamp.

``calibrate`` measures what one such append costs in Redis commands, so that the appender's
writes can be taken out of the front's command counts. Every call the benchmark makes into the
engine is in this module.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import TYPE_CHECKING

import msgspec

from .client import Pool, expect
from .load import raise_nofile

if TYPE_CHECKING:
    from broker.engine.conversations import Fence

_SETUP_PARALLEL = 64
_PREFILL_BATCH = 100
_HTTP_PREFILL_BATCH = 2000
_HTTP_CONNECTIONS = 16
_MIN_TICK_NS = 2_000_000
_DS_MESSAGE_BYTES = 100
_JSON = {"Content-Type": "application/json"}
ENGINE = "engine"
RESUMABLE_STREAM = "resumable-stream"
DS = "ds"


def ds_message(text: str, size: int = _DS_MESSAGE_BYTES) -> bytes:
    """A JSON message of exactly ``size`` bytes whose ``text`` is ``text`` (padded)."""
    bare = b'{"text":"%s","pad":""}' % text.encode()
    return bare[:-2] + b"x" * max(0, size - len(bare)) + b'"}'


@dataclass(frozen=True)
class AppendPlan:
    redis_url: str
    prefix: str
    cids: list[str]
    rate: float  # delta events per second per conversation while ticking (0: none)
    prefill: int = 0  # delta events per conversation written before the window
    target: str = ENGINE  # ENGINE, RESUMABLE_STREAM or DS
    base_url: str = ""  # the server, for the HTTP targets


@dataclass
class AppendResult:
    appends: int = 0
    events: int = 0
    skipped: int = 0  # appends dropped because the appender fell behind its schedule
    cpu_seconds: float = 0.0


class EngineWriter:
    """One open run per conversation, appended to through the engine as a worker does."""

    def __init__(self, plan: AppendPlan) -> None:
        from broker.core.settings import Settings
        from broker.engine import Engine

        settings = Settings.from_env(
            {"BROKER_REDIS_URL": plan.redis_url, "BROKER_KEY_PREFIX": plan.prefix}
        )
        self.plan = plan
        self.engine = Engine(settings, "bench-appender", max_connections=_SETUP_PARALLEL)
        self.store = self.engine.conversations
        self.runs: list[str] = []
        self.fences: dict[str, Fence] = {}  # each run's, as a worker holds it
        self.sequence: list[int] = []

    async def open(self) -> None:
        """A user message and a started run in every conversation, as accept + a worker's start."""
        from broker.core.events import RunStarted, UserMessage, encode
        from broker.core.ids import new_id
        from broker.engine.conversations import Accepted, Started

        async def one(cid: str, run_id: str) -> None:
            message_id = new_id("m")
            _, data = encode(UserMessage(message_id=message_id, content="bench", run_id=run_id))
            accepted = await self.store.accept(
                cid,
                run_id=run_id,
                message_id=message_id,
                assistant_message_id=new_id("m"),
                model="simulated",
                data=data,
                idempotency_key=None,
                idempotency_record="",
            )
            if not isinstance(accepted, Accepted):
                raise RuntimeError(f"bench: could not open a run in {cid}: {accepted}")
            _, started = encode(RunStarted(run_id, new_id("m"), "simulated"))
            start = await self.store.start_run(cid, run_id, "bench-appender", "bench", started)
            if not isinstance(start, Started):
                raise RuntimeError(f"bench: could not start the run in {cid}: {start}")
            self.fences[run_id] = start.fence

        self.runs = [new_id("r") for _ in self.plan.cids]
        self.sequence = [0] * len(self.runs)
        await _bounded(one(cid, run) for cid, run in zip(self.plan.cids, self.runs, strict=True))

    async def prefill(self) -> None:
        """Fill every conversation with ``plan.prefill`` deltas, many per append."""

        async def one(index: int) -> None:
            left = self.plan.prefill
            while left > 0:
                count = min(left, _PREFILL_BATCH)
                await self._append(index, count)
                left -= count

        await _bounded(one(i) for i in range(len(self.runs)))

    def positions(self) -> dict[str, list[str]] | None:
        """None: the parent reads the stored entry ids from Redis itself."""
        return None

    async def _append(self, index: int, count: int = 1) -> None:
        from broker.core.events import Delta, encode

        run_id = self.runs[index]
        self.sequence[index] += 1
        events = [encode(Delta(run_id, str(time.time_ns()))) for _ in range(count)]
        appended = await self.store.append(
            self.plan.cids[index], run_id, self.fences[run_id], self.sequence[index], events
        )
        if appended.value != "written":
            raise RuntimeError(f"bench: append refused: {appended}")

    async def append(self, indexes: list[int]) -> None:
        """One delta in each of these conversations, in one round trip."""
        from broker.core.events import Delta, encode

        writes = []
        for index in indexes:
            run_id = self.runs[index]
            self.sequence[index] += 1
            events = [encode(Delta(run_id, str(time.time_ns())))]
            writes.append(
                self.store.append(
                    self.plan.cids[index],
                    run_id,
                    self.fences[run_id],
                    self.sequence[index],
                    events,
                    refresh_ttl=False,
                )
            )
        for appended in await asyncio.gather(*writes):
            if appended.value != "written":
                raise RuntimeError(f"bench: append refused: {appended}")

    async def finish(self) -> None:
        from broker.core.events import RunCompleted, RunState, encode

        async def one(cid: str, run_id: str) -> None:
            name, data = encode(RunCompleted(run_id, "stop"))
            await self.store.finish(
                cid, run_id, self.fences[run_id], RunState.COMPLETED, name, data
            )

        await _bounded(one(cid, run) for cid, run in zip(self.plan.cids, self.runs, strict=True))

    async def close(self) -> None:
        await self.engine.aclose()


class ProducerWriter:
    """resumable-stream's producers, one per conversation, in the peer's server process.

    The server opens each producer with a user message and a started run (as the engine writer
    does) and turns each ``[cid, text]`` into a delta frame; it answers the ids it gave when
    asked, which a resume storm starts from.
    """

    def __init__(self, plan: AppendPlan) -> None:
        self.plan = plan
        self.pool = Pool(plan.base_url, 1)
        self.ids: dict[str, list[str]] = {cid: [] for cid in plan.cids}

    async def open(self) -> None:
        await self.pool.open()
        for start in range(0, len(self.plan.cids), _HTTP_PREFILL_BATCH):
            cids = self.plan.cids[start : start + _HTTP_PREFILL_BATCH]
            response = await self.pool.request(
                "POST", "/bench/open", _JSON, msgspec.json.encode({"cids": cids})
            )
            expect(response, 200, what="POST /bench/open")

    async def prefill(self) -> None:
        pending = [(cid, self.plan.prefill) for cid in self.plan.cids]
        while pending:
            batch: list[tuple[str, str]] = []
            while pending and len(batch) < _HTTP_PREFILL_BATCH:
                cid, left = pending.pop()
                take = min(left, _HTTP_PREFILL_BATCH - len(batch))
                batch.extend((cid, str(time.time_ns())) for _ in range(take))
                if left > take:
                    pending.append((cid, left - take))
            response = await self.pool.request(
                "POST", "/bench/append?ids=1", _JSON, msgspec.json.encode(batch)
            )
            ids = msgspec.json.decode(expect(response, 200, what="POST /bench/append").body)
            for (cid, _), entry_id in zip(batch, ids["ids"], strict=True):
                self.ids[cid].append(entry_id)

    def positions(self) -> dict[str, list[str]] | None:
        return self.ids

    async def append(self, indexes: list[int]) -> None:
        cids = self.plan.cids
        batch = [(cids[i], str(time.time_ns())) for i in indexes]
        response = await self.pool.request(
            "POST", "/bench/append", _JSON, msgspec.json.encode(batch)
        )
        expect(response, 204, what="POST /bench/append")

    async def finish(self) -> None:
        body = msgspec.json.encode({"cids": self.plan.cids})
        expect(await self.pool.request("POST", "/bench/finish", _JSON, body), 204, what="finish")

    async def close(self) -> None:
        self.pool.close()


class DsWriter:
    """Durable Streams appends over HTTP: one JSON stream per ``cid``, a message per event.

    Each stream is created with one message, so that a reader from its start has a first event
    at once, as a conversation has its user message.
    """

    def __init__(self, plan: AppendPlan) -> None:
        self.plan = plan
        self.pool = Pool(plan.base_url, _HTTP_CONNECTIONS)
        self.paths = [f"/v1/stream/{cid}" for cid in plan.cids]

    async def open(self) -> None:
        await self.pool.open()

        async def one(path: str) -> None:
            response = await self.pool.request("PUT", path, _JSON)
            expect(response, 200, 201, what=f"PUT {path}")
            response = await self.pool.request("POST", path, _JSON, ds_message("opened"))
            expect(response, 200, 204, what=f"POST {path}")

        await _bounded((one(path) for path in self.paths), _HTTP_CONNECTIONS)

    async def prefill(self) -> None:
        async def one(path: str) -> None:
            left = self.plan.prefill
            while left > 0:
                count = min(left, _PREFILL_BATCH)
                body = b"[" + b",".join(ds_message(str(time.time_ns())) for _ in range(count))
                response = await self.pool.request("POST", path, _JSON, body + b"]")
                expect(response, 200, 204, what=f"POST {path}")
                left -= count

        await _bounded((one(path) for path in self.paths), _HTTP_CONNECTIONS)

    def positions(self) -> dict[str, list[str]] | None:
        return None

    async def append(self, indexes: list[int]) -> None:
        async def one(path: str) -> None:
            body = ds_message(str(time.time_ns()))
            response = await self.pool.request("POST", path, _JSON, body)
            expect(response, 200, 204, what=f"POST {path}")

        await asyncio.gather(*(one(self.paths[i]) for i in indexes))

    async def finish(self) -> None:
        return None

    async def close(self) -> None:
        self.pool.close()


Writer = EngineWriter | ProducerWriter | DsWriter


def _writer(plan: AppendPlan) -> Writer:
    if plan.target == RESUMABLE_STREAM:
        return ProducerWriter(plan)
    if plan.target == DS:
        return DsWriter(plan)
    return EngineWriter(plan)


class Appender:
    """The schedule: ``rate`` deltas per second per conversation, in turn, through a writer."""

    def __init__(
        self, plan: AppendPlan, writer: Writer, appends: Synchronized, events: Synchronized
    ) -> None:
        self.plan = plan
        self.writer = writer
        self.appends = appends
        self.events = events
        self.result = AppendResult()

    async def tick(self, t_start: int, t_end: int) -> None:
        """Append one delta at a time, conversations in turn, at ``rate`` per conversation."""
        count = len(self.plan.cids)
        if self.plan.rate <= 0 or count == 0:
            await _sleep_until(t_end)
            return
        interval = 1e9 / (self.plan.rate * count)
        await _sleep_until(t_start)
        done = 0
        turn = 0
        while True:
            now = time.time_ns()
            if now >= t_end:
                return
            due = int((now - t_start) / interval) + 1
            batch = due - done
            if batch > count:
                self.result.skipped += batch - count
                done += batch - count
                batch = count
            if batch > 0:
                indexes = [(turn + i) % count for i in range(batch)]
                turn = (turn + batch) % count
                # Counted before they are sent: the parent reads these counters next to Redis's
                # command counts, and a pipeline is in Redis's counts a moment after it leaves.
                with self.appends.get_lock():
                    self.appends.value += batch
                with self.events.get_lock():
                    self.events.value += batch
                await self.writer.append(indexes)
                done += batch
                self.result.appends += batch
                self.result.events += batch
            # A pipeline costs the same client CPU for 1 append as for 20: tick at most every
            # _MIN_TICK_NS. Each delta still carries the time it was really written.
            await _sleep_until(max(int(t_start + done * interval), time.time_ns() + _MIN_TICK_NS))


@dataclass(frozen=True)
class ScriptCost:
    """Redis commands one append costs: ``per_append`` + ``per_event`` per event.

    Measured, not assumed, so the appender's writes can be taken out of the front's command
    count whatever the append script does.
    """

    per_append: int
    per_event: int


def calibrate(redis_url: str, prefix: str, commands: Callable[[], int]) -> ScriptCost:
    """Count what one append of 1 and of 2 events costs in Redis commands, while idle.

    ``commands`` reads the total count of commands Redis has run so far.
    """
    from broker.core.events import Delta, RunStarted, UserMessage, encode
    from broker.core.settings import Settings
    from broker.engine import Engine
    from broker.engine.conversations import Started

    settings = Settings.from_env({"BROKER_REDIS_URL": redis_url, "BROKER_KEY_PREFIX": prefix})

    async def measure() -> tuple[int, int]:
        engine = Engine(settings, "bench-calibrate", max_connections=2)
        store = engine.conversations
        try:
            cid, run = "calibrate", "r_calibrate"
            _, data = encode(UserMessage(message_id="m_c", content="c", run_id=run))
            await store.accept(
                cid,
                run_id=run,
                message_id="m_c",
                assistant_message_id="m_a",
                model="simulated",
                data=data,
                idempotency_key=None,
                idempotency_record="",
            )
            start = await store.start_run(
                cid, run, "bench", "bench", encode(RunStarted(run, "m_a", "simulated"))[1]
            )
            assert isinstance(start, Started), start
            costs = []
            sequence = 0
            for count in (1, 2, 1, 2, 1, 2):
                before = commands()
                sequence += 1
                events = [encode(Delta(run, "0"))] * count
                # As the appender's appends, in a round trip of their own.
                await store.append(cid, run, start.fence, sequence, events, refresh_ttl=False)
                costs.append((count, commands() - before))
            one = min(c for n, c in costs if n == 1)
            two = min(c for n, c in costs if n == 2)
            return one, two
        finally:
            await engine.aclose()

    one, two = asyncio.run(measure())
    return ScriptCost(per_append=one - (two - one), per_event=two - one)


async def _bounded(coroutines: Iterable[Awaitable[None]], limit: int = _SETUP_PARALLEL) -> None:
    """Run set-up writes concurrently, but no more at once than the pool has connections."""
    gate = asyncio.Semaphore(limit)

    async def guarded(coroutine: Awaitable[None]) -> None:
        async with gate:
            await coroutine

    await asyncio.gather(*(guarded(c) for c in coroutines))


async def _sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.time_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def _run(
    conn: Connection, plan: AppendPlan, appends: Synchronized, events: Synchronized
) -> None:
    writer = _writer(plan)
    appender = Appender(plan, writer, appends, events)
    try:
        await writer.open()
        if plan.prefill:
            await writer.prefill()
        conn.send(("ready", writer.positions()))
        t_start, t_end = await asyncio.to_thread(conn.recv)
        await appender.tick(t_start, t_end)
        await writer.finish()
    finally:
        await writer.close()
    times = os.times()
    appender.result.cpu_seconds = times.user + times.system
    conn.send(("result", appender.result))


def append_main(
    conn: Connection, plan: AppendPlan, appends: Synchronized, events: Synchronized
) -> None:
    """Entry point of the appender process."""
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_run(conn, plan, appends, events))
