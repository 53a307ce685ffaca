"""Bounds on what one request can make a worker do.

Every run ends within ``BROKER_MAX_RUN_SECONDS``, whatever its model, with ``run.failed`` /
``run_timeout``, and its model call is closed. The built-in model's parameters allow what a
test or a demo needs and refuse a run that would hold a worker's slot for long: one 90-byte
POST used to hold a slot for 69 days.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from tests.api import error_code
from tests.helpers import new_cid, terminal_of
from tests.stack import Front, Stack
from tests.stored import answer_text, of_run, stored_events, terminals
from tests.upstreams.server import FakeUpstream, Reply

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.mark.parametrize(
    "params",
    [
        {"tokens": 100_000, "interval_ms": 60_000},  # the 69-day run
        {"tokens": 50_001, "interval_ms": 0},
        {"tokens": 1, "interval_ms": 1_001},
        {"tokens": 10_000, "interval_ms": 100},  # 1,000 s
        {"tokens": 3_000, "reasoning_tokens": 3_001, "interval_ms": 50},  # 300.05 s
        {"reasoning_tokens": 50_001, "interval_ms": 0},
    ],
)
async def test_simulated_runs_that_would_hold_a_worker_long_are_refused(
    lone_front: Front, params: dict[str, int]
) -> None:
    cid = new_cid("long")
    response = await lone_front.api.post_message(cid, "hi", **params)
    assert response.status_code == 422 and error_code(response) == "invalid_field", response.text
    assert (await lone_front.api.snapshot(cid)).status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"tokens": 200, "interval_ms": 50},  # the README's demo
        {"tokens": 45_000, "interval_ms": 0},  # the slow-client flood test
        {"tokens": 3_000, "reasoning_tokens": 2_999, "interval_ms": 50},  # just under 300 s
    ],
)
async def test_what_tests_and_demos_need_is_accepted(
    lone_front: Front, params: dict[str, int]
) -> None:
    response = await lone_front.api.post_message(new_cid("ok"), "hi", **params)
    assert response.status_code == 202, response.text


async def test_a_run_past_the_time_limit_fails_with_run_timeout(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1, max_run_seconds=1.5)
    (front,) = stack.fronts
    cid = new_cid("timeout")
    run_id = (await front.api.start_run(cid, "slow", tokens=100, interval_ms=100))["run_id"]
    async with await front.api.stream(cid) as stream:
        events = await stream.read_until(terminal_of(run_id), timeout=10)
    (ended,) = terminals(events, run_id)
    assert ended.event == "run.failed"
    assert ended.json()["error"]["code"] == "run_timeout"
    words = answer_text(events, run_id).split()
    assert 3 <= len(words) < 100, "the run was not cut at its limit"
    await asyncio.sleep(1.0)
    stored = of_run(stored_events(redis_client, prefix, cid), run_id)
    assert stored[-1] == ended, "output was stored after the run's end"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


async def test_the_time_limit_closes_a_silent_model_call(stack: Stack, fake: FakeUpstream) -> None:
    """A model that answers nothing would hold the run for its first-byte timeout (minutes);
    the run's own limit ends it first and closes the call."""
    fake.reply(Reply(hold_head=True))
    stack.start(
        fronts=1,
        workers=1,
        max_run_seconds=1.5,
        openai_base_url=fake.url + "/v1",
        openai_models="silent-model",
    )
    (front,) = stack.fronts
    cid = new_cid("silent")
    run_id = (await front.api.start_run(cid, "hello?", model="silent-model"))["run_id"]
    async with await front.api.run_stream(cid, run_id) as stream:
        events = await stream.read_to_end(timeout=15)
    assert events[-1].event == "run.failed"
    assert events[-1].json()["error"]["code"] == "run_timeout"
    assert await asyncio.to_thread(fake.wait_disconnect, 0, 5.0), "the model call stayed open"
