"""One terminal event per run, and Redis as the only shared state, when processes stop: a
worker's graceful shutdown, a front's crash.

Redis is the only shared state, so a front or a worker may go away at any moment: clients
resume elsewhere without loss, and every run still ends in exactly one terminal event. (A
worker killed outright is covered by ``test_worker_loss.py``.)
"""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis

from tests.helpers import new_cid, nth_delta, terminal_of
from tests.stack import Stack
from tests.stored import answer_text, of_run, stored_events, terminals

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_sigterm_lets_short_runs_finish_and_fails_the_rest_with_worker_shutdown(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1, shutdown_grace_seconds=3)
    (front,) = stack.fronts
    (worker,) = stack.workers
    long_cid, short_cid = new_cid("long"), new_cid("short")
    long_run = (await front.api.start_run(long_cid, "long", tokens=5000, interval_ms=10))["run_id"]
    async with await front.api.stream(long_cid) as stream:
        await stream.read_until(nth_delta(2))
    short_run = (await front.api.start_run(short_cid, "short", tokens=10, interval_ms=20))["run_id"]
    async with await front.api.stream(short_cid) as stream:
        await stream.read_until(lambda e: e.event == "run.started")

    worker.signal(signal.SIGTERM)  # no new jobs; the short run fits in the grace period
    async with asyncio.timeout(30):
        while worker.alive():
            await asyncio.sleep(0.05)

    long_events = stored_events(redis_client, prefix, long_cid)
    (long_end,) = terminals(long_events, long_run)
    assert long_end.event == "run.failed"
    assert long_end.json()["error"]["code"] == "worker_shutdown"
    assert of_run(long_events, long_run)[-1] == long_end
    short_events = stored_events(redis_client, prefix, short_cid)
    (short_end,) = terminals(short_events, short_run)
    assert short_end.event == "run.completed"
    assert len(answer_text(short_events, short_run).split()) == 10
    for cid in (long_cid, short_cid):
        assert (await front.api.snapshot(cid)).json()["active_run_id"] is None


async def test_a_front_killed_mid_stream_loses_the_client_nothing(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    cid = new_cid()
    run_id = (await a.api.start_run(cid, "survive", tokens=150, interval_ms=10))["run_id"]
    stream = await a.api.stream(cid)
    before = await stream.read_until(nth_delta(4))
    a.kill()  # SIGKILL: no graceful close of the SSE response
    async with asyncio.timeout(10):
        while await stream.next(timeout=10) is not None:
            pass
    received = stream.events
    await stream.close()
    assert received[: len(before)] == before

    async with await b.api.stream(cid, last_event_id=received[-1].id) as resumed:
        rest = await resumed.read_until(terminal_of(run_id), timeout=60)
    assert received + rest == stored_events(redis_client, prefix, cid)
    assert len(answer_text(received + rest, run_id).split()) == 150
