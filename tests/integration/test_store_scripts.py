"""The run scripts, called directly: what each answers to a repeat, and who may write a run.

Redis connections retry a command after a connection error (broker/engine/connections.py), so a
script whose reply was lost may run twice: each one must answer the repeat as it answered the
first call, and write nothing twice. And a started run belongs to one worker at one epoch
(fencing): once another worker took it over, the old owner can append nothing and cannot end it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio

from broker.core.events import (
    Delta,
    ErrorInfo,
    RunCompleted,
    RunFailed,
    RunStarted,
    RunState,
    encode,
)
from broker.core.ids import new_id
from broker.core.settings import Settings
from broker.core.streams import StreamConfig
from broker.engine import Engine
from broker.engine.conversations import (
    Accepted,
    Appended,
    Conversations,
    Ended,
    Fence,
    Refused,
    RunActive,
    Started,
)
from broker.engine.limits import Admitted, Quota, Refusal
from broker.engine.streams import AppendOutcome, Created
from tests.helpers import new_cid
from tests.stored import stored_events

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[Conversations]:
    engine = Engine(Settings(redis_url=redis_url, key_prefix=prefix), "test")
    yield engine.conversations
    await engine.aclose()


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


async def _queued_run(store: Conversations) -> tuple[str, str]:
    cid, run_id = new_cid("script"), new_id("r")
    assert isinstance(await store.accept(cid, **_accept_fields(run_id)), Accepted)
    return cid, run_id


def _delta(run_id: str, text: str) -> list[tuple[str, bytes]]:
    return [encode(Delta(run_id, text))]


async def test_a_repeated_accept_answers_as_the_first_and_writes_one_message(
    store: Conversations, redis_client: redis.Redis, prefix: str
) -> None:
    cid, run_id = new_cid("repeat"), new_id("r")
    fields = _accept_fields(run_id)
    first = await store.accept(cid, **fields)
    again = await store.accept(cid, **fields)
    assert isinstance(first, Accepted) and again == first
    assert len(stored_events(redis_client, prefix, cid)) == 1
    other = await store.accept(cid, **{**fields, "run_id": new_id("r")})
    assert other == RunActive(run_id)


async def test_a_repeated_start_answers_as_the_first_and_another_job_of_the_run_is_refused(
    store: Conversations, redis_client: redis.Redis, prefix: str
) -> None:
    cid, run_id = await _queued_run(store)
    started = encode(RunStarted(run_id, "m_a", "simulated"))[1]
    first = await store.start_run(cid, run_id, "worker-a", "1-0", started)
    again = await store.start_run(cid, run_id, "worker-a", "1-0", started)
    assert isinstance(first, Started) and again == first
    # The same worker with another job entry of this run (a duplicate job, or its own job
    # claimed back after a pause) must not start a second copy.
    assert await store.start_run(cid, run_id, "worker-a", "2-0", started) is RunState.RUNNING
    assert await store.start_run(cid, run_id, "worker-b", "1-0", started) is RunState.RUNNING
    assert [e.event for e in stored_events(redis_client, prefix, cid)] == ["message", "run.started"]


async def test_a_run_taken_over_refuses_every_write_of_its_old_owner(
    store: Conversations, redis_client: redis.Redis, prefix: str
) -> None:
    cid, run_id = await _queued_run(store)
    started = encode(RunStarted(run_id, "m_a", "simulated"))[1]
    start = await store.start_run(cid, run_id, "worker-a", "1-0", started)
    assert isinstance(start, Started)
    old = start.fence
    assert await store.append(cid, run_id, old, 1, _delta(run_id, "before")) is Appended.WRITTEN

    # Only the run's own job entry can carry a take-over.
    assert await store.take_over(cid, run_id, "worker-b", "9-0") is None
    taken = await store.take_over(cid, run_id, "worker-b", "1-0")
    assert taken is not None and taken.state is RunState.RUNNING
    assert taken.fence.epoch != old.epoch
    assert await store.take_over(cid, run_id, "worker-b", "1-0") == taken  # a repeat

    after = _delta(run_id, "after")
    assert await store.append(cid, run_id, old, 2, after) is Appended.FENCED
    forged = Fence("worker-a", taken.fence.epoch)
    assert await store.append(cid, run_id, forged, 2, after) is Appended.FENCED
    completed = encode(RunCompleted(run_id, "stop"))
    refused = await store.finish(cid, run_id, old, RunState.COMPLETED, *completed)
    assert refused is Refused.FENCED
    lost = encode(RunFailed(run_id, ErrorInfo("worker_lost", "gone")))
    ended = await store.finish(cid, run_id, taken.fence, RunState.FAILED, *lost)
    assert isinstance(ended, Ended) and ended.just_now
    final = await store.finish(cid, run_id, old, RunState.COMPLETED, *completed)
    assert isinstance(final, Ended) and not final.just_now

    stored = stored_events(redis_client, prefix, cid)
    assert [e.event for e in stored] == ["message", "run.started", "delta", "run.failed"]
    assert '"before"' in stored[2].data


async def test_without_a_fence_only_a_run_no_worker_started_can_be_ended(
    store: Conversations,
) -> None:
    failed = encode(RunFailed("r", ErrorInfo("internal_error", "the worker failed")))
    cid, run_id = await _queued_run(store)
    ended = await store.finish(cid, run_id, None, RunState.FAILED, *failed)
    assert isinstance(ended, Ended) and ended.just_now

    cid, run_id = await _queued_run(store)
    started = encode(RunStarted(run_id, "m_a", "simulated"))[1]
    assert isinstance(await store.start_run(cid, run_id, "worker-a", "1-0", started), Started)
    assert await store.finish(cid, run_id, None, RunState.FAILED, *failed) is Refused.FENCED


async def test_a_stream_from_before_uids_gets_one_and_a_deleted_one_none(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    """Streams written before streams had a uid are read (and pinned) as any other; the uid
    is given once, and never to a stream that is gone."""
    engine = Engine(Settings(redis_url=redis_url, key_prefix=prefix), "test")
    try:
        meta_key = engine.keys.durable("old").meta
        redis_client.hset(meta_key, mapping={"ct": "text/plain", "ctn": "text/plain"})
        first = await engine.streams.meta("old")
        again = await engine.streams.meta("old")
        assert first is not None and again is not None and first.uid and first.uid == again.uid
        redis_client.delete(meta_key)
        assert await engine.streams.meta("old") is None
        assert not redis_client.exists(meta_key)
    finally:
        await engine.aclose()


async def test_appends_of_one_moment_share_a_pipeline_and_each_gets_its_own_answer(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    """Concurrent appends are sent together (``Gathered``): each is applied once and gets its
    own outcome, a refusal included, also after Redis forgot the script (a restart)."""
    engine = Engine(Settings(redis_url=redis_url, key_prefix=prefix), "test")
    streams = engine.streams
    config = StreamConfig("application/json", "application/json", "", "", "", False, "", "", "")
    try:
        names = [f"gathered-{i}" for i in range(20)]
        for name in names:
            assert isinstance(await streams.create(name, config, "alice", []), Created)
        for round_ in range(2):
            if round_:
                redis_client.script_flush()
            outcomes = await asyncio.gather(
                *(
                    streams.append(
                        name,
                        "application/json",
                        [b"%d" % i],
                        close=False,
                        seq="",
                        producer=None,
                        owner="alice",
                    )
                    for i, name in enumerate(names)
                ),
                streams.append(names[0], "text/plain", [b"x"], close=False, seq="", producer=None),
                streams.append(
                    names[1],
                    "application/json",
                    [b"1"],
                    close=False,
                    seq="",
                    producer=None,
                    owner="mallory",
                ),
                streams.append(
                    "nothing", "application/json", [b"1"], close=False, seq="", producer=None
                ),
            )
            *appended, mismatch, foreign, missing = outcomes
            assert [a.outcome for a in appended] == [AppendOutcome.OK] * len(names)
            assert mismatch.outcome is AppendOutcome.CONTENT_TYPE
            assert mismatch.content_type == "application/json"
            assert foreign.outcome is AppendOutcome.MISSING
            assert missing.outcome is AppendOutcome.MISSING
        for i, name in enumerate(names):
            data = redis_client.xrange(engine.keys.durable(name).data)
            assert [fields[b"d"] for _, fields in data] == [b"%d" % i] * 2
    finally:
        await engine.aclose()


async def test_a_request_s_limits_cost_one_round_trip_and_survive_a_forgotten_script(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    """The guard's admission goes by EVALSHA in its pipeline: no SCRIPT EXISTS before it on
    every request, and a script Redis forgot (a restart) is loaded again."""
    engine = Engine(Settings(redis_url=redis_url, key_prefix=prefix), "test")
    quota = Quota(requests_per_minute=100)

    def script_calls() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_script", {}).get("calls", 0))

    try:
        assert isinstance((await engine.limits.admit("alice", quota))[0], Admitted)
        before = script_calls()
        for _ in range(5):
            verdict, owner = await engine.limits.admit("alice", quota, owner_of=new_cid())
            assert isinstance(verdict, Admitted) and owner == (None, False)
        assert script_calls() == before, "SCRIPT EXISTS (or LOAD) sent with every request"
        redis_client.script_flush()
        assert isinstance((await engine.limits.admit("alice", quota))[0], Admitted)
        over = Quota(requests_per_minute=7)  # 7 counted so far: the next is over
        assert isinstance((await engine.limits.admit("alice", over))[0], Refusal)
    finally:
        await engine.aclose()
