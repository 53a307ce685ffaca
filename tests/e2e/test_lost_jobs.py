"""Whatever is lost, a run ends: jobs that vanish, deletions that race with a new message.

- A queued run whose job is gone (trimmed, or lost with a failover) fails ``job_lost`` within
  twice ``BROKER_LEASE_SECONDS`` plus ``BROKER_REAP_INTERVAL_SECONDS`` of its queueing, once a
  worker runs; a started run whose job vanished while its worker died ends as a lost worker's.
- A deletion withdraws the jobs of every run no worker started, one accepted between the
  deletion's cancel and its delete included, and no worker recreates a key of the conversation.
- A front stalled between queueing a job and accepting its run cannot accept it once the job
  may have been given up (the accept's deadline), and a worker that gives up the job of a
  conversation that does not exist writes nothing.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from broker.core.ids import new_id
from broker.core.jobs import Job
from broker.core.settings import Settings
from broker.engine import Engine
from broker.engine.conversations import Accepted, Refused
from tests.helpers import job_streams, new_cid
from tests.stack import Stack
from tests.stored import stored_events, terminals

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LEASE = {"lease_seconds": 1.5, "reap_interval_seconds": 0.3}
BOUND = 2 * LEASE["lease_seconds"] + LEASE["reap_interval_seconds"]


def _keys_of(client: redis.Redis, prefix: str, cid: str) -> list[bytes]:
    return list(client.scan_iter(match=f"{prefix}:{{{cid}}}:*", count=1000))


async def _terminal(client: redis.Redis, prefix: str, cid: str, run_id: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        ends = terminals(stored_events(client, prefix, cid), run_id)
        if ends:
            assert len(ends) == 1, ends
            return ends[0].event
        assert time.monotonic() < deadline, f"run {run_id} never ended"
        await asyncio.sleep(0.1)


async def test_a_queued_run_whose_job_was_trimmed_fails_job_lost_within_its_bound(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=0, **LEASE)
    front = stack.fronts[0]
    cid = new_cid("lost")
    run_id = (await front.api.start_run(cid, "hi", tokens=3, interval_ms=1))["run_id"]
    (jobs,) = job_streams(prefix)
    ((entry, _),) = redis_client.xrange(jobs)
    redis_client.xdel(jobs, entry)  # trimmed, or gone with a failover

    queued_at = time.monotonic()
    stack.worker()
    assert await _terminal(redis_client, prefix, cid, run_id, seconds=BOUND + 10) == "run.failed"
    assert time.monotonic() - queued_at < BOUND + 5
    failed = terminals(stored_events(redis_client, prefix, cid), run_id)[0]
    assert failed.json()["error"]["code"] == "job_lost"

    second = (await front.api.start_run(cid, "again", tokens=3, interval_ms=1))["run_id"]
    assert await _terminal(redis_client, prefix, cid, second, seconds=30) == "run.completed"


async def test_a_started_run_whose_job_vanished_with_its_worker_ends_worker_lost(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1, **LEASE)
    front = stack.fronts[0]
    cid = new_cid("vanished")
    run_id = (await front.api.start_run(cid, "hi", tokens=400, interval_ms=20))["run_id"]
    (jobs,) = job_streams(prefix)
    deadline = time.monotonic() + 20
    while redis_client.hget(f"{prefix}:{{{cid}}}:run:{run_id}", "status") != b"running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    stack.workers[0].kill()
    for entry, _ in redis_client.xrange(jobs):
        redis_client.xdel(jobs, entry)
    stack.worker()
    assert await _terminal(redis_client, prefix, cid, run_id, seconds=BOUND + 15) == "run.failed"
    failed = terminals(stored_events(redis_client, prefix, cid), run_id)[0]
    assert failed.json()["error"]["code"] == "worker_lost"


async def test_a_deletion_withdraws_every_unstarted_job_and_no_worker_recreates_a_key(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """A message accepted between the deletion's cancel and its delete script leaves a queued
    run: its job is withdrawn with the others, so no worker ever takes it."""
    stack.start(fronts=1, workers=0, **LEASE)
    front = stack.fronts[0]
    cid = new_cid("erased")
    first = (await front.api.start_run(cid, "one"))["run_id"]
    assert (await front.api.cancel(cid, first)).status_code == 200  # the deletion's cancel
    await front.api.start_run(cid, "two")  # accepted in between
    assert (await front.api.request("DELETE", f"/v1/conversations/{cid}")).status_code == 204

    (jobs,) = job_streams(prefix)
    assert redis_client.xlen(jobs) == 0, "a job of the deleted conversation is still queued"
    stack.worker()
    await asyncio.sleep(BOUND + 1)  # a worker's read, its wait for the run, and a sweep
    assert _keys_of(redis_client, prefix, cid) == []


async def test_an_accept_past_its_deadline_is_refused_and_nothing_is_written(
    stack: Stack, redis_client: redis.Redis, prefix: str, redis_url: str
) -> None:
    """The front queued the job and stalled; the worker gave the job up without writing a key
    of a conversation that does not exist; the accept that comes past its deadline is refused,
    one that comes within it is ended by the sweep: either way the run ends or never is."""
    stack.start(fronts=0, workers=1, **LEASE)
    settings = Settings(redis_url=redis_url, key_prefix=prefix, **LEASE)  # type: ignore[arg-type]
    engine = Engine(settings, "test")
    try:
        cid, run_id = new_cid("stalled"), new_id("r")
        job = Job(
            conversation_id=cid,
            run_id=run_id,
            message_id=new_id("m"),
            assistant_message_id=new_id("m"),
            model="simulated",
            content="late",
        )
        entry = await engine.queue.enqueue(job)
        (jobs,) = job_streams(prefix)
        deadline = time.monotonic() + 20
        while redis_client.xlen(jobs):
            assert time.monotonic() < deadline, "the worker never gave the job up"
            await asyncio.sleep(0.1)
        assert _keys_of(redis_client, prefix, cid) == []

        fields = dict(
            run_id=run_id,
            message_id=job.message_id,
            assistant_message_id=job.assistant_message_id,
            model="simulated",
            data=b'{"message_id":"m","content":"late","run_id":"r","role":"user"}',
            idempotency_key=None,
            idempotency_record="",
            job_entry=entry,
        )
        queued_ms = int(entry.partition("-")[0])
        too_late = await engine.conversations.accept(cid, **fields, deadline_ms=queued_ms)
        assert too_late is Refused.TOO_LATE and _keys_of(redis_client, prefix, cid) == []

        within = await engine.conversations.accept(cid, **fields, deadline_ms=queued_ms + 60_000)
        assert isinstance(within, Accepted)
        assert (
            await _terminal(redis_client, prefix, cid, run_id, seconds=BOUND + 10) == "run.failed"
        )
    finally:
        await engine.aclose()
