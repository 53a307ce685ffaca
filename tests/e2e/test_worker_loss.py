"""A worker killed mid-run: its lease lapses, another worker ends the run exactly once.

Also the other half of the lease: a job a worker took but never started is run by another
worker, once.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio

from broker.core.ids import new_id
from broker.core.jobs import Job, job_encoder
from broker.core.settings import Settings
from broker.engine import Engine
from broker.engine.conversations import Refused
from tests.helpers import job_streams, new_cid, nth_delta, terminal_of
from tests.stack import Stack
from tests.stored import assert_no_duplicates, of_run, stored_events, terminals

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LEASE = {"lease_seconds": 1.5, "reap_interval_seconds": 0.3}


async def test_a_killed_worker_s_run_ends_with_worker_lost_and_the_conversation_goes_on(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=0, **LEASE)
    doomed = stack.worker()
    front = stack.fronts[0]
    cid = new_cid("lost")
    run_id = (await front.api.start_run(cid, "long answer", tokens=2000, interval_ms=5))["run_id"]

    watcher = await front.api.stream(cid)
    await watcher.read_until(nth_delta(3))
    doomed.kill()
    stack.worker()  # the survivor: nothing else may end the run

    async with watcher:
        events = await watcher.read_until(terminal_of(run_id), timeout=30)
    ended = terminals(events, run_id)
    assert [e.event for e in ended] == ["run.failed"]
    assert ended[0].json()["error"]["code"] == "worker_lost"

    # Exactly one terminal in the store too, and no output after it, however long we look.
    await asyncio.sleep(3 * LEASE["lease_seconds"])
    stored = of_run(stored_events(redis_client, prefix, cid), run_id)
    assert [e.event for e in stored if e.is_terminal] == ["run.failed"]
    assert stored[-1].is_terminal
    assert_no_duplicates(events)

    # The conversation is usable again: a new prompt is accepted and answered.
    second = (await front.api.start_run(cid, "again", tokens=5, interval_ms=1))["run_id"]
    await front.api.wait_run_finished(cid, second)
    assert [e.event for e in terminals(stored_events(redis_client, prefix, cid), second)] == [
        "run.completed"
    ]


async def test_a_job_taken_by_a_dead_worker_before_it_started_runs_once_elsewhere(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """Simulates the crash window between reading a job and starting its run."""
    stack.start(fronts=1, workers=0, **LEASE)
    front = stack.fronts[0]
    jobs = job_streams(prefix)[0]
    redis_client.xgroup_create(jobs, "workers", id="0", mkstream=True)
    cid = new_cid("orphan")
    run_id = (await front.api.start_run(cid, "hello", tokens=20, interval_ms=1))["run_id"]
    # A consumer that takes the job and then vanishes, as a worker killed at that instant would.
    taken = redis_client.xreadgroup("workers", "vanished", {jobs: ">"}, count=1)
    assert taken and len(taken[0][1]) == 1

    stack.worker()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if terminals(stored_events(redis_client, prefix, cid), run_id):
            break
        await asyncio.sleep(0.1)
    stored = of_run(stored_events(redis_client, prefix, cid), run_id)
    assert [e.event for e in stored if e.event == "run.started"] == ["run.started"]
    assert [e.event for e in stored if e.is_terminal] == ["run.completed"]
    assert redis_client.xpending(jobs, "workers")["pending"] == 0


async def test_a_front_dying_between_queueing_a_job_and_accepting_its_run_leaves_nothing_open(
    stack: Stack, redis_client: redis.Redis, prefix: str, redis_url: str
) -> None:
    """The front queues the job, then accepts the run; it dies in between. The job is dropped,
    the run can never start late, and the conversation takes new prompts."""
    stack.start(fronts=1, workers=1)
    front = stack.fronts[0]
    cid = new_cid("halfway")
    first = (await front.api.start_run(cid, "before", tokens=2, interval_ms=1))["run_id"]
    await front.api.wait_run_finished(cid, first)
    before = stored_events(redis_client, prefix, cid)
    run_id = new_id("r")
    job = Job(
        conversation_id=cid,
        run_id=run_id,
        message_id=new_id("m"),
        assistant_message_id=new_id("m"),
        model="simulated",
        content="never accepted",
    )
    redis_client.xadd(job_streams(prefix)[0], {b"j": job_encoder.encode(job)})

    deadline = time.monotonic() + 20
    while redis_client.hget(f"{prefix}:{{{cid}}}:run:{run_id}", "status") != b"orphaned":
        assert time.monotonic() < deadline, "the worker never gave the job up"
        await asyncio.sleep(0.1)
    assert redis_client.xlen(job_streams(prefix)[0]) == 0
    assert redis_client.xpending(job_streams(prefix)[0], "workers")["pending"] == 0

    # The accept that comes too late is refused: that run can never start.
    engine = Engine(Settings(redis_url=redis_url, key_prefix=prefix), "test")
    try:
        late = await engine.conversations.accept(
            cid,
            run_id=run_id,
            message_id=job.message_id,
            assistant_message_id=job.assistant_message_id,
            model="simulated",
            data=b"{}",
            idempotency_key=None,
            idempotency_record="",
        )
    finally:
        await engine.aclose()
    assert late is Refused.ORPHANED
    assert stored_events(redis_client, prefix, cid) == before

    second = (await front.api.start_run(cid, "now for real", tokens=3, interval_ms=1))["run_id"]
    await front.api.wait_run_finished(cid, second)
    assert [e.event for e in terminals(stored_events(redis_client, prefix, cid), second)] == [
        "run.completed"
    ]
