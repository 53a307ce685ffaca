"""The run scripts, called directly: what each answers to a repeat, and who may write a run.

Redis connections retry a command after a connection error (broker/core/connections.py), so a
script whose reply was lost may run twice: each one must answer the repeat as it answered the
first call, and write nothing twice. And a started run belongs to one worker at one epoch
(fencing): once another worker took it over, the old owner can append nothing and cannot end it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio

from broker.core.events import Delta, ErrorInfo, RunCompleted, RunFailed, RunStarted, encode
from broker.core.ids import new_id
from broker.core.settings import Settings
from broker.engine.conversations import Fence, Store
from tests.helpers import new_cid
from tests.stored import stored_events

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[Store]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield Store(client, Settings(redis_url=redis_url, key_prefix=prefix))
    await client.aclose()


def _accept_fields(run_id: str) -> dict[str, Any]:
    return dict(
        run_id=run_id,
        message_id=new_id("m"),
        assistant_message_id=new_id("m"),
        model="simulated",
        data=b'{"message_id":"m","content":"hi","run_id":"r","role":"user"}',
        idempotency_key=None,
        idempotency_record="",
    )


async def _queued_run(store: Store) -> tuple[str, str]:
    cid, run_id = new_cid("script"), new_id("r")
    assert (await store.accept(cid, **_accept_fields(run_id))).outcome == "ok"
    return cid, run_id


def _delta(run_id: str, text: str) -> list[tuple[str, bytes]]:
    return [encode(Delta(run_id, text))]


async def test_a_repeated_accept_answers_as_the_first_and_writes_one_message(
    store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    cid, run_id = new_cid("repeat"), new_id("r")
    fields = _accept_fields(run_id)
    first = await store.accept(cid, **fields)
    again = await store.accept(cid, **fields)
    assert first.outcome == "ok" and again == first
    assert len(stored_events(redis_client, prefix, cid)) == 1
    other = await store.accept(cid, **{**fields, "run_id": new_id("r")})
    assert other.outcome == "run_active" and other.active_run == run_id


async def test_a_repeated_start_answers_as_the_first_and_another_job_of_the_run_is_refused(
    store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    cid, run_id = await _queued_run(store)
    started = encode(RunStarted(run_id, "m_a", "simulated"))[1]
    first = await store.start_run(cid, run_id, "worker-a", "1-0", started)
    again = await store.start_run(cid, run_id, "worker-a", "1-0", started)
    assert first.outcome == "ok" and first.fence is not None and again == first
    # The same worker with another job entry of this run (a duplicate job, or its own job
    # claimed back after a pause) must not start a second copy.
    assert (await store.start_run(cid, run_id, "worker-a", "2-0", started)).outcome == "running"
    assert (await store.start_run(cid, run_id, "worker-b", "1-0", started)).outcome == "running"
    assert [e.event for e in stored_events(redis_client, prefix, cid)] == ["message", "run.started"]


async def test_a_run_taken_over_refuses_every_write_of_its_old_owner(
    store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    cid, run_id = await _queued_run(store)
    started = encode(RunStarted(run_id, "m_a", "simulated"))[1]
    old = (await store.start_run(cid, run_id, "worker-a", "1-0", started)).fence
    assert old is not None
    assert await store.append(cid, run_id, old, 1, _delta(run_id, "before")) == "running"

    # Only the run's own job entry can carry a take-over.
    assert (await store.take_over(cid, run_id, "worker-b", "9-0")).outcome == "other_job"
    taken = await store.take_over(cid, run_id, "worker-b", "1-0")
    assert taken.outcome == "taken" and taken.status == "running" and taken.fence is not None
    assert taken.fence.epoch != old.epoch
    assert await store.take_over(cid, run_id, "worker-b", "1-0") == taken  # a repeat

    assert await store.append(cid, run_id, old, 2, _delta(run_id, "after")) == "fenced"
    forged = Fence("worker-a", taken.fence.epoch)
    assert await store.append(cid, run_id, forged, 2, _delta(run_id, "after")) == "fenced"
    completed = encode(RunCompleted(run_id, "stop"))
    refused = await store.finish(cid, run_id, old, "completed", *completed)
    assert refused.outcome == "fenced"
    lost = encode(RunFailed(run_id, ErrorInfo("worker_lost", "gone")))
    ended = await store.finish(cid, run_id, taken.fence, "failed", *lost)
    assert ended.outcome == "ok"
    assert (await store.finish(cid, run_id, old, "completed", *completed)).outcome == "final"

    stored = stored_events(redis_client, prefix, cid)
    assert [e.event for e in stored] == ["message", "run.started", "delta", "run.failed"]
    assert '"before"' in stored[2].data


async def test_without_a_fence_only_a_run_no_worker_started_can_be_ended(store: Store) -> None:
    failed = encode(RunFailed("r", ErrorInfo("internal_error", "the worker failed")))
    cid, run_id = await _queued_run(store)
    assert (await store.finish(cid, run_id, None, "failed", *failed)).outcome == "ok"

    cid, run_id = await _queued_run(store)
    started = encode(RunStarted(run_id, "m_a", "simulated"))[1]
    assert (await store.start_run(cid, run_id, "worker-a", "1-0", started)).outcome == "ok"
    assert (await store.finish(cid, run_id, None, "failed", *failed)).outcome == "fenced"
