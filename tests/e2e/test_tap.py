"""The tap: every event of every conversation, through a consumer group, for a copy elsewhere.

``broker tap`` runs as a real process and its lines are compared with what Redis stores, byte
for byte; a tap killed mid-run resumes without losing anything, and consumers of one group
share the runs between them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
import pytest
import redis
import redis.asyncio

from broker.core.events import ToolCall
from broker.core.settings import Settings
from broker.engine.tap import Tap, tap_events
from tests.helpers import new_cid, outbox_length, outbox_pending
from tests.stack import Stack, base_environment
from tests.stored import stored_events

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


class TapProcess:
    """``python -m broker tap`` with its stdout read line by line on a thread (or not read)."""

    def __init__(self, stack: Stack, *args: str, read: bool = True) -> None:
        env = stack.env()
        self.stderr_path = stack.workdir / f"tap{id(self)}.log"
        self._stderr: IO[bytes] = open(self.stderr_path, "wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "broker", "tap", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self._reader: threading.Thread | None = None
        if read:
            self.start_reading()

    def start_reading(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.raw.append(line)
            self.lines.append(json.loads(line))

    def keys(self) -> set[tuple[str, str]]:
        return {(line["conversation_id"], line["id"]) for line in list(self.lines)}

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        if self._reader is not None:
            self._reader.join(10)
        self._stderr.close()


@pytest.fixture
def taps() -> Iterator[list[TapProcess]]:
    started: list[TapProcess] = []
    yield started
    for process in started:
        process.kill()


async def _wait_for(condition: Any, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _all_stored(client: redis.Redis, prefix: str, cids: list[str]) -> dict[tuple[str, str], Any]:
    return {(cid, e.id): e for cid in cids for e in stored_events(client, prefix, cid)}


async def _finished_runs(stack: Stack, cids: list[str], **params: Any) -> None:
    front = stack.fronts[0]
    for cid in cids:
        run_id = (await front.api.start_run(cid, f"about {cid}", **params))["run_id"]
        await front.api.wait_run_finished(cid, run_id)


@pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True)
async def test_broker_tap_prints_every_event_of_every_conversation(
    stack: Stack, taps: list[TapProcess], redis_client: redis.Redis, prefix: str
) -> None:
    """On a cluster, the conversations' notices are spread over the outbox's shards."""
    stack.start(generators="weather=examples.agent:weather_agent")
    front = stack.fronts[0]
    cids = [new_cid("tap") for _ in range(3)]
    await _finished_runs(stack, cids, tokens=30, interval_ms=1)
    taps.append(TapProcess(stack, "--group", "copy"))
    # A run of the agent while the tap is already following: it comes once it has ended.
    agent_cid = new_cid("agent")
    run_id = (await front.api.start_run(agent_cid, "Weather in Tokyo?", model="weather"))["run_id"]
    await front.api.wait_run_finished(agent_cid, run_id)
    cids.append(agent_cid)
    await _finished_runs(stack, cids[:1], tokens=5, interval_ms=1)  # a second run of one of them

    stored = _all_stored(redis_client, prefix, cids)
    tap = taps[0]
    await _wait_for(lambda: tap.keys() == set(stored), what="every event printed")
    await asyncio.sleep(0.5)
    assert len(tap.lines) == len(stored), "no event twice"
    for line, raw in zip(tap.lines, tap.raw, strict=True):
        event = stored[(line["conversation_id"], line["id"])]
        assert line["event"] == event.event
        # The stored bytes, embedded as they are.
        assert raw == (
            b'{"conversation_id":"%s","id":"%s","event":"%s","data":%s}\n'
            % (
                line["conversation_id"].encode(),
                line["id"].encode(),
                line["event"].encode(),
                event.data.encode(),
            )
        )
    # Within a conversation, the stream's order.
    for cid in cids:
        ids = [line["id"] for line in tap.lines if line["conversation_id"] == cid]
        assert ids == [e.id for e in stored_events(redis_client, prefix, cid)]
    assert {"tool.call", "tool.result", "data"} <= {line["event"] for line in tap.lines}
    # One notice per run was all the tap cost the path that generates.
    assert outbox_length(redis_client, prefix) == 5


async def test_a_tap_killed_mid_run_resumes_with_that_run_whole(
    stack: Stack, taps: list[TapProcess], redis_client: redis.Redis, prefix: str
) -> None:
    """Its reader stops reading, so it blocks writing mid-run, and is killed there."""
    stack.start(coalesce_ms=0)  # one event per token: runs larger than a pipe's buffer
    cids = [new_cid("big") for _ in range(3)]
    await _finished_runs(stack, cids, tokens=1500, interval_ms=0)
    stored = _all_stored(redis_client, prefix, cids)

    stuck = TapProcess(stack, "--group", "copy", "--consumer", "c1", read=False)
    taps.append(stuck)
    assert stuck.popen.stdout is not None
    first = [json.loads(stuck.popen.stdout.readline()) for _ in range(10)]
    await asyncio.sleep(1.0)  # it fills the pipe and blocks inside the first run
    stuck.kill()
    interrupted = first[0]["conversation_id"]
    assert outbox_pending(redis_client, prefix, "tap:copy") >= 1

    again = TapProcess(stack, "--group", "copy", "--consumer", "c1")
    taps.append(again)
    await _wait_for(lambda: again.keys() == set(stored), what="everything after the restart")
    # The unfinished run came again from its start; the finished ones were not repeated.
    runs = [line["conversation_id"] for line in again.lines if line["event"] == "message"]
    assert sorted(runs) == sorted(cids) and runs.count(interrupted) == 1
    assert len(again.lines) == len(stored)
    await _wait_for(
        lambda: outbox_pending(redis_client, prefix, "tap:copy") == 0,
        what="every notice acknowledged",
    )


async def test_another_consumer_takes_over_the_run_of_one_that_died(
    stack: Stack, taps: list[TapProcess], redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(coalesce_ms=0)
    cids = [new_cid("takeover")]
    await _finished_runs(stack, cids, tokens=1500, interval_ms=0)
    stored = _all_stored(redis_client, prefix, cids)
    stuck = TapProcess(stack, "--group", "copy", "--consumer", "a", read=False)
    taps.append(stuck)
    assert stuck.popen.stdout is not None
    stuck.popen.stdout.readline()
    await asyncio.sleep(1.0)
    stuck.kill()

    other = TapProcess(stack, "--group", "copy", "--consumer", "b", "--claim-after", "1")
    taps.append(other)
    await _wait_for(lambda: other.keys() == set(stored), what="the taken-over run")


async def test_consumers_of_one_group_share_the_runs_and_other_groups_get_everything(
    stack: Stack, redis_url: str, prefix: str, redis_client: redis.Redis
) -> None:
    stack.start()
    cids = [new_cid("share") for _ in range(4)]
    await _finished_runs(stack, cids, tokens=5, interval_ms=1)
    stored = _all_stored(redis_client, prefix, cids)
    settings = Settings(redis_url=redis_url, key_prefix=prefix)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        a = Tap(client, settings, group="shared", consumer="a", block_ms=100).events()
        b = Tap(client, settings, group="shared", consumer="b", block_ms=100).events()
        # `a` takes a run and holds it (it has not asked for the run's next event yet)...
        held = await anext(a)
        in_held = sum(1 for cid, _ in stored if cid == held.conversation_id)
        # ...so `b` gets all the others.
        from_b = [await anext(b) for _ in range(len(stored) - in_held)]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await anext(b)
        from_a = [held] + [await anext(a) for _ in range(in_held - 1)]
        seen = [(e.conversation_id, e.id) for e in from_a + from_b]
        assert len(seen) == len(set(seen)) and set(seen) == set(stored)
        assert {e.conversation_id for e in from_a} == {held.conversation_id}
        assert held.event == "message"
        await a.aclose()
        await b.aclose()

        # Another group gets everything again, from the oldest notice kept.
        other = Tap(client, settings, group="audit", block_ms=100).events()
        everything = [await anext(other) for _ in range(len(stored))]
        assert {(e.conversation_id, e.id) for e in everything} == set(stored)
        await other.aclose()
    finally:
        await client.aclose()


async def test_the_plain_iterator_yields_typed_events(
    stack: Stack, redis_url: str, prefix: str
) -> None:
    stack.start(generators="weather=examples.agent:weather_agent")
    front = stack.fronts[0]
    cid = new_cid("typed")
    run_id = (await front.api.start_run(cid, "Weather in Paris?", model="weather"))["run_id"]
    await front.api.wait_run_finished(cid, run_id)
    settings = Settings(redis_url=redis_url, key_prefix=prefix)

    def read() -> list[Any]:
        events = tap_events(settings, group="py")
        try:
            collected = []
            for event in events:
                collected.append(event)
                if event.event == "run.completed":
                    return collected
            return collected
        finally:
            events.close()

    events = await asyncio.to_thread(read)
    calls = [e.typed() for e in events if e.event == "tool.call"]
    assert all(isinstance(call, ToolCall) for call in calls)
    assert calls[-1].arguments == {"city": "Paris"}
    assert msgspec.json.decode(events[0].data)["content"] == "Weather in Paris?"


def test_a_bad_group_name_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "broker", "tap", "--group", "no spaces"],
        capture_output=True,
        text=True,
        env=base_environment(),
        timeout=30,
    )
    assert done.returncode != 0 and "--group" in done.stderr


async def test_a_tap_waits_out_a_redis_restart(
    tmp_path: Path, stack_on: Any, taps: list[TapProcess]
) -> None:
    from broker.embedded_redis import EmbeddedRedis, find_redis_server

    if find_redis_server() is None:
        pytest.skip("needs a redis-server binary to stop and restart")
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True, appendfsync="always").start()
    try:
        stack = stack_on(server.url, "tapfaults")
        stack.start()
        before = [new_cid("before")]
        await _finished_runs(stack, before, tokens=5, interval_ms=1)
        tap = TapProcess(stack, "--group", "copy")
        taps.append(tap)
        client = redis.Redis.from_url(server.url)
        try:
            await _wait_for(
                lambda: tap.keys() == set(_all_stored(client, "tapfaults", before)), what="before"
            )
            server.stop()
            await asyncio.sleep(1.5)
            server.start()  # the same port and data (its AOF)
            after = [new_cid("after")]
            front = stack.fronts[0]
            for _ in range(50):  # a front's pooled connections may fail once after the restart
                response = await front.api.post_message(after[0], "after", tokens=5, interval_ms=1)
                if response.status_code == 202:
                    break
                await asyncio.sleep(0.2)
            await front.api.wait_run_finished(after[0], response.json()["run_id"])
            everything = _all_stored(client, "tapfaults", before + after)
            await _wait_for(lambda: tap.keys() == set(everything), what="the run after")
        finally:
            client.close()
        assert tap.popen.poll() is None, "the tap is still running"
        assert "Redis unreachable" in tap.stderr_path.read_text()
    finally:
        for process in taps:
            process.kill()
        taps.clear()
        server.stop()
