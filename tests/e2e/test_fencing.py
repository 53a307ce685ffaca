"""A worker paused past its lease (a GC pause, a frozen VM; here SIGSTOP, then SIGCONT).

Alone, it must not take its own running job back and run it a second time: the model would be
called, and billed, twice. With another worker, that one takes the run over and ends it once
(``worker_lost``); the paused one, once it wakes, writes nothing more and closes its model
call, whether its model is still streaming or has gone silent. The model is a fake upstream on
loopback that counts its requests.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator

import pytest
import redis

from tests.helpers import new_cid, nth_delta, terminal_of
from tests.stack import Process, Stack
from tests.stored import answer_text, of_run, stored_events, terminals
from tests.upstreams.server import FakeUpstream, Reply

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LEASE = {"lease_seconds": 1.5, "reap_interval_seconds": 0.3, "coalesce_ms": 0}
PAUSE = 4.0  # well past a lease and a reap interval
WORDS = [f"w{i}" for i in range(60)]
ANSWER = "".join(f"{word} " for word in WORDS)


def _chunk(text: str) -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(delta).encode() + b"\n\n"


_END = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'


def _streaming(interval: float) -> Reply:
    """An answer of 60 words, one every ``interval`` seconds, then its end."""
    return Reply(
        headers={"content-type": "text/event-stream"},
        parts=[_chunk(f"{word} ") for word in WORDS] + [_END],
        interval=interval,
    )


def _silent_after(words: int) -> Reply:
    """A few words at once, then silence until the client leaves (a model thinking)."""
    return Reply(
        headers={"content-type": "text/event-stream"},
        parts=[_chunk(f"{word} ") for word in WORDS[:words]],
        end="hold",
    )


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def _start(stack: Stack, fake: FakeUpstream, workers: int, **settings: float) -> None:
    stack.start(
        fronts=1,
        workers=workers,
        openai_base_url=fake.url + "/v1",
        openai_models="fake-model",
        **{**LEASE, **settings},
    )


async def _pause(worker: Process, seconds: float) -> None:
    worker.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        worker.signal(signal.SIGCONT)


async def test_a_lone_worker_paused_past_its_lease_runs_its_job_once(
    stack: Stack, fake: FakeUpstream, redis_client: redis.Redis, prefix: str
) -> None:
    fake.reply(_streaming(0.15), _streaming(0.1), _streaming(0.1))
    # Reaping far more often than renewing: on waking, the reaper's timer is due first, and
    # finds this worker's own job idle past its lease.
    _start(stack, fake, workers=1, reap_interval_seconds=0.05)
    (front,) = stack.fronts
    (worker,) = stack.workers
    cid = new_cid("paused")
    run_id = (await front.api.start_run(cid, "go", model="fake-model"))["run_id"]
    async with await front.api.stream(cid) as client:
        await client.read_until(nth_delta(5), timeout=20)
        await _pause(worker, PAUSE)
        await client.read_until(nth_delta(3), timeout=20)
        await _pause(worker, PAUSE)
        events = await client.read_until(terminal_of(run_id), timeout=30)

    assert len(fake.requests) == 1, "the model was called twice for one run"
    stored = of_run(stored_events(redis_client, prefix, cid), run_id)
    assert [e.event for e in stored if e.event == "run.started"] == ["run.started"]
    assert [e.event for e in terminals(stored, run_id)] == ["run.completed"]
    assert answer_text(stored, run_id) == ANSWER
    assert events[-1].event == "run.completed"


async def _paused_owner_is_taken_over(
    stack: Stack, fake: FakeUpstream, redis_client: redis.Redis, prefix: str, reply: Reply
) -> None:
    fake.reply(reply, _streaming(0.01))  # a second request would get an answer too
    _start(stack, fake, workers=0)
    (front,) = stack.fronts
    owner = stack.worker()
    cid = new_cid("takeover")
    run_id = (await front.api.start_run(cid, "go", model="fake-model"))["run_id"]
    async with await front.api.stream(cid) as client:
        await client.read_until(nth_delta(3), timeout=20)
        stack.worker()  # the other worker: it is there when the owner's lease lapses
        owner.signal(signal.SIGSTOP)
        try:
            events = await client.read_until(terminal_of(run_id), timeout=20)
        finally:
            owner.signal(signal.SIGCONT)
        # The owner wakes; within a lease renewal at most it must have let the model go.
        closed = await asyncio.to_thread(fake.wait_disconnect, 0, 5.0)
        await asyncio.sleep(2 * LEASE["lease_seconds"])

    assert closed, "the paused worker kept its model call open after losing the run"
    assert len(fake.requests) == 1, "the model was called twice for one run"
    ended = terminals(events, run_id)
    assert [e.event for e in ended] == ["run.failed"]
    assert ended[0].json()["error"]["code"] == "worker_lost"
    stored = of_run(stored_events(redis_client, prefix, cid), run_id)
    assert stored[-1] == ended[0], "output was stored after the run's end"
    assert [e.event for e in stored if e.is_terminal] == ["run.failed"]
    assert owner.alive()
    # The conversation goes on, served by either worker.
    next_run = (await front.api.start_run(cid, "again", tokens=3, interval_ms=1))["run_id"]
    await front.api.wait_run_finished(cid, next_run)
    assert [e.event for e in terminals(stored_events(redis_client, prefix, cid), next_run)] == [
        "run.completed"
    ]


async def test_a_paused_owner_whose_model_streams_on_writes_nothing_after_the_take_over(
    stack: Stack, fake: FakeUpstream, redis_client: redis.Redis, prefix: str
) -> None:
    """On waking, the owner holds words its model sent meanwhile; its next append is fenced."""
    await _paused_owner_is_taken_over(stack, fake, redis_client, prefix, _streaming(0.1))


async def test_a_paused_owner_whose_model_went_silent_lets_the_model_go(
    stack: Stack, fake: FakeUpstream, redis_client: redis.Redis, prefix: str
) -> None:
    """On waking, the owner has nothing to append; its lease renewal tells it the run is gone."""
    await _paused_owner_is_taken_over(stack, fake, redis_client, prefix, _silent_after(5))
