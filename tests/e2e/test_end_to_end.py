"""End to end through real processes: refresh, resume, multi-device, cancel, idempotency.

Every scenario compares what clients received with what Redis stores, entry by entry: ids,
event names and the data bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
import redis

from tests.conftest import RedisTarget
from tests.helpers import job_streams, new_cid, nth_delta, terminal_of
from tests.stack import Stack
from tests.stored import (
    answer_text,
    assert_in_order,
    assert_no_duplicates,
    of_run,
    stored_events,
    terminals,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(120),
    pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True),
]

TERMINAL_STATUS = {
    "run.completed": "completed",
    "run.cancelled": "cancelled",
    "run.failed": "failed",
}


@pytest.mark.parametrize("via", ["header", "query"])
async def test_refresh_mid_answer_resumes_on_the_other_front(
    stack: Stack, redis_client: redis.Redis, prefix: str, via: str
) -> None:
    """A refresh mid-answer, resumed on another front, loses nothing and repeats nothing."""
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    cid = new_cid()
    run = await a.api.start_run(cid, "tell me a story", tokens=200, interval_ms=10)
    run_id = run["run_id"]

    first = await a.api.stream(cid)
    before = await first.read_until(nth_delta(5))
    await first.close()
    assert not any(e.is_terminal for e in before), "the refresh must happen mid-answer"
    held = before[-1].id
    assert held is not None

    if via == "header":
        second = await b.api.stream(cid, last_event_id=held)
    else:
        second = await b.api.stream(cid, query_last_event_id=held)
    async with second:
        assert second.status == 200
        after = await second.read_until(terminal_of(run_id), timeout=60)

    stored = stored_events(redis_client, prefix, cid)
    assert before + after == stored
    assert after == stored_events(redis_client, prefix, cid, after=held)
    assert_no_duplicates(before + after)
    assert_in_order(before + after)
    assert after[-1].event == "run.completed"
    assert len(answer_text(before + after, run_id).split()) == 200


async def test_second_device_joining_mid_answer_gets_everything_then_live(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    cid = new_cid()
    run_id = (await a.api.start_run(cid, "hi", tokens=150, interval_ms=10))["run_id"]

    laptop = await a.api.stream(cid)
    await laptop.read_until(nth_delta(3))
    stored_at_join = stored_events(redis_client, prefix, cid)
    assert not terminals(stored_at_join, run_id), "the second device must join mid-answer"

    phone = await b.api.stream(cid)  # no Last-Event-ID: the whole conversation
    phone_events, laptop_rest = await asyncio.gather(
        phone.read_until(terminal_of(run_id), timeout=60),
        laptop.read_until(terminal_of(run_id), timeout=60),
    )
    await asyncio.gather(phone.close(), laptop.close())

    stored = stored_events(redis_client, prefix, cid)
    assert phone_events == stored
    assert laptop.events == stored
    assert phone_events[0].event == "message"
    assert len(phone_events) > len(stored_at_join), "the phone also received live events"


async def test_other_device_sees_a_new_prompt_live(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    cid = new_cid()
    first = (await a.api.start_run(cid, "first question", tokens=5, interval_ms=1))["run_id"]

    phone = await b.api.stream(cid)
    async with phone:
        await phone.read_until(terminal_of(first))
        second = await a.api.start_run(
            cid, "second question from the laptop", tokens=8, interval_ms=5
        )
        live = await phone.read_until(terminal_of(second["run_id"]))

    assert live[0].event == "message"
    assert live[0].json() == {
        "message_id": second["message_id"],
        "role": "user",
        "content": "second question from the laptop",
        "run_id": second["run_id"],
    }
    assert live[0].id == second["event_id"]
    assert [e.event for e in live][1] == "run.started"
    assert live[-1].event == "run.completed"
    assert phone.events == stored_events(redis_client, prefix, cid)


async def test_cancel_from_another_device_after_the_first_disconnected(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    cid = new_cid()
    run_id = (await a.api.start_run(cid, "long answer", tokens=3000, interval_ms=10))["run_id"]

    laptop = await a.api.stream(cid)
    seen = await laptop.read_until(nth_delta(3))
    await laptop.close()  # the laptop goes away; that is not a cancel
    held = seen[-1].id

    phone = await b.api.stream(cid, last_event_id=held)
    async with phone:
        await phone.read_until(lambda e: e.event == "delta")
        response = await b.api.cancel(cid)
        assert response.status_code == 202, response.text
        assert response.json() == {"run_id": run_id, "status": "cancelling"}
        phone_rest = await phone.read_until(terminal_of(run_id), timeout=30)

    laptop_again = await a.api.stream(cid, last_event_id=held)
    async with laptop_again:
        laptop_rest = await laptop_again.read_until(terminal_of(run_id), timeout=30)

    assert phone_rest[-1].event == "run.cancelled"
    assert laptop_rest[-1] == phone_rest[-1]
    stored = stored_events(redis_client, prefix, cid)
    assert laptop_rest == stored_events(redis_client, prefix, cid, after=held)
    assert len(terminals(stored, run_id)) == 1
    assert of_run(stored, run_id)[-1].event == "run.cancelled", "nothing of the run after its end"

    # Generation stopped: the stream stops growing, the answer is cut short.
    length = redis_client.xlen(f"{prefix}:{{{cid}}}:events")
    await asyncio.sleep(1.0)
    assert redis_client.xlen(f"{prefix}:{{{cid}}}:events") == length
    assert len(answer_text(stored, run_id).split()) < 3000

    again = await a.api.cancel(cid, run_id)
    assert again.status_code == 200, again.text
    assert again.json() == {"run_id": run_id, "status": "cancelled", "event_id": phone_rest[-1].id}
    nothing = await a.api.cancel(cid)
    assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "no_active_run"
    snapshot = (await b.api.snapshot(cid)).json()
    assert snapshot["active_run_id"] is None
    assert snapshot["messages"][-1]["status"] == "cancelled"


async def test_cancel_before_any_worker_picked_the_run_up(
    stack: Stack, redis_client: redis.Redis, prefix: str, redis_target: RedisTarget
) -> None:
    stack.start(fronts=1, workers=0)
    (front,) = stack.fronts
    cid = new_cid()
    run = await front.api.start_run(cid, "nobody is working yet", tokens=20, interval_ms=5)
    run_id = run["run_id"]

    response = await front.api.cancel(cid)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["run_id"] == run_id and body["status"] == "cancelled"
    stored = stored_events(redis_client, prefix, cid)
    assert [e.event for e in stored] == ["message", "run.cancelled"]
    assert stored[-1].id == body["event_id"]
    again = await front.api.cancel(cid, run_id)
    assert (again.status_code, again.json()) == (200, body)

    # A worker arriving later must not generate the cancelled run. A probe run queued after it
    # completing shows the worker has reached (and skipped) the cancelled job.
    stack.worker()
    probe_cid = new_cid("probe")
    probe = await front.api.start_run(probe_cid, "probe", tokens=3, interval_ms=1)
    async with await front.api.run_stream(probe_cid, probe["run_id"]) as probe_stream:
        probe_events = await probe_stream.read_to_end(timeout=30)
    assert probe_events[-1].event == "run.completed"
    await asyncio.sleep(0.5)
    assert stored_events(redis_client, prefix, cid) == stored
    # ...and acknowledged the job it skipped: nothing is left pending in the consumer group.
    async with asyncio.timeout(10):
        for jobs in job_streams(prefix, redis_target.cluster):
            while redis_client.exists(jobs) and redis_client.xpending(jobs, "workers")["pending"]:
                await asyncio.sleep(0.05)

    # The conversation is not stuck: the next message runs normally.
    next_run = await front.api.start_run(cid, "and now?", tokens=3, interval_ms=1)
    async with await front.api.run_stream(cid, next_run["run_id"]) as run_stream:
        assert (await run_stream.read_to_end(timeout=30))[-1].event == "run.completed"


async def test_cancel_racing_completion_leaves_exactly_one_terminal_event(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """Cancels land before, during and after tiny runs; each run ends exactly once, every time."""
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    outcomes: list[tuple[str, str, list[tuple[int, dict[str, str]]]]] = []
    for i in range(30):
        cid = new_cid(f"race{i}")
        run_id = (await a.api.start_run(cid, f"race {i}", tokens=4, interval_ms=3))["run_id"]
        await asyncio.sleep((i % 10) * 0.003)
        if i % 3 == 0:
            responses = [await b.api.cancel(cid, run_id)]
        elif i % 3 == 1:
            responses = [await a.api.cancel(cid, run_id, wait=True)]
        else:  # two devices cancel at once
            responses = list(
                await asyncio.gather(a.api.cancel(cid, run_id), b.api.cancel(cid, run_id))
            )
        outcomes.append((cid, run_id, [(r.status_code, r.json()) for r in responses]))

    for cid, run_id, responses in outcomes:
        await a.api.wait_run_finished(cid, run_id)
        stored = stored_events(redis_client, prefix, cid)
        ends = terminals(stored, run_id)
        assert len(ends) == 1, f"run {run_id}: {[e.event for e in stored]}"
        assert of_run(stored, run_id)[-1] == ends[0], "nothing of a run may follow its end"
        for status, body in responses:
            assert body["run_id"] == run_id
            if status == 202:
                assert body["status"] == "cancelling"
            else:
                assert status == 200, body
                assert body == {
                    "run_id": run_id,
                    "status": TERMINAL_STATUS[ends[0].event],
                    "event_id": ends[0].id,
                }
        # No client waits forever: the run's own stream ends with that terminal event.
        async with await b.api.run_stream(cid, run_id) as run_stream:
            assert (await run_stream.read_to_end(timeout=10))[-1] == ends[0]


async def test_idempotency_key_retry_returns_the_first_answer_and_starts_one_run(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    cid = new_cid()
    key = {"Idempotency-Key": "retry-" + uuid.uuid4().hex}
    body = {"content": "only once please", "params": {"tokens": 5, "interval_ms": 1}}
    path = f"/v1/conversations/{cid}/messages"

    first = await a.api.request("POST", path, json=body, headers=key)
    assert first.status_code == 202, first.text
    retries = await asyncio.gather(
        *(front.api.request("POST", path, json=body, headers=key) for front in (a, b, a, b))
    )
    for retry in retries:
        assert (retry.status_code, retry.json()) == (202, first.json())
    run_id = first.json()["run_id"]
    await a.api.wait_run_finished(cid, run_id)
    late = await b.api.request("POST", path, json=body, headers=key)
    assert (late.status_code, late.json()) == (202, first.json())

    stored = stored_events(redis_client, prefix, cid)
    assert [e.event for e in stored].count("message") == 1
    assert [e.event for e in stored].count("run.started") == 1

    reused = await a.api.request(
        "POST", path, json={**body, "content": "something else"}, headers=key
    )
    assert reused.status_code == 422, reused.text
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert stored_events(redis_client, prefix, cid) == stored

    other = await a.api.request("POST", path, json=body, headers={"Idempotency-Key": "another"})
    assert other.status_code == 202 and other.json()["run_id"] != run_id


async def test_second_post_while_a_run_is_active_is_409(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    cid = new_cid()
    run_id = (await a.api.start_run(cid, "long", tokens=3000, interval_ms=10))["run_id"]

    for front in (a, b):
        response = await front.api.post_message(cid, "impatient")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "run_active"
    messages = [e for e in stored_events(redis_client, prefix, cid) if e.event == "message"]
    assert len(messages) == 1

    cancelled = await b.api.cancel(cid, wait=True)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["run_id"] == run_id
    assert cancelled.json()["status"] == "cancelled"
    assert (await a.api.post_message(cid, "now it is my turn", tokens=2)).status_code == 202


async def test_snapshot_merges_the_stream_and_resuming_after_it_completes_the_answer(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    cid = new_cid()
    params = {"tokens": 120, "interval_ms": 5, "reasoning_tokens": 10, "seed": 7}
    run = await a.api.start_run(cid, "explain streams", **params)
    run_id = run["run_id"]

    # Mid-run: render the snapshot, then stream after its last_event_id.
    async with asyncio.timeout(30):
        while True:
            middle = (await b.api.snapshot(cid)).json()
            if len(middle["messages"]) == 2 and middle["messages"][1]["content"]:
                break
            await asyncio.sleep(0.02)
    assert middle["active_run_id"] == run_id
    assert middle["messages"][1]["status"] in ("running", "cancelling")
    async with await a.api.stream(cid, last_event_id=middle["last_event_id"]) as rest_stream:
        rest = await rest_stream.read_until(terminal_of(run_id), timeout=60)

    stored = stored_events(redis_client, prefix, cid)
    content = answer_text(stored, run_id)
    reasoning = answer_text(stored, run_id, "reasoning")
    assert middle["messages"][1]["content"] + answer_text(rest, run_id) == content
    assert len(content.split()) == 120
    assert len(reasoning.split()) == 10

    message, started, completed = stored[0], stored[1], stored[-1]
    assert message.id == run["event_id"]
    assert message.json() == {
        "message_id": run["message_id"],
        "role": "user",
        "content": "explain streams",
        "run_id": run_id,
    }
    assert started.event == "run.started"
    assert set(started.json()) == {"run_id", "message_id", "model"}
    assert started.json()["model"] == "simulated"
    assert completed.event == "run.completed"
    assert completed.json()["finish_reason"] == "stop" and "usage" in completed.json()

    final = (await a.api.snapshot(cid)).json()
    assert final == {
        "conversation_id": cid,
        "messages": [
            {
                "message_id": run["message_id"],
                "role": "user",
                "content": "explain streams",
                "reasoning": "",
                "run_id": run_id,
                "status": "completed",
                "parts": [{"type": "text", "text": "explain streams"}],
                "error": None,
            },
            {
                "message_id": started.json()["message_id"],
                "role": "assistant",
                "content": content,
                "reasoning": reasoning,
                "run_id": run_id,
                "status": "completed",
                "parts": [
                    {"type": "reasoning", "text": reasoning},
                    {"type": "text", "text": content},
                ],
                "error": None,
            },
        ],
        "active_run_id": None,
        "last_event_id": stored[-1].id,
    }

    # Cancelling a finished run is idempotent: its final status and terminal event.
    late = await b.api.cancel(cid, run_id)
    assert (late.status_code, late.json()) == (
        200,
        {"run_id": run_id, "status": "completed", "event_id": completed.id},
    )
    assert (await b.api.cancel(cid)).status_code == 409

    # The simulated model is deterministic for the same content and params.
    twin = new_cid("twin")
    twin_run = (await b.api.start_run(twin, "explain streams", **{**params, "interval_ms": 1}))[
        "run_id"
    ]
    await b.api.wait_run_finished(twin, twin_run)
    twin_stored = stored_events(redis_client, prefix, twin)
    assert answer_text(twin_stored, twin_run) == content


async def test_run_stream_ends_after_the_terminal_event_and_active_is_204_when_idle(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1)
    a, b = stack.fronts
    cid = new_cid()
    run_id = (await a.api.start_run(cid, "q", tokens=30, interval_ms=10))["run_id"]

    async with await b.api.run_stream(cid, "active") as live:
        assert live.status == 200
        live_events = await live.read_to_end(timeout=30)
    stored = stored_events(redis_client, prefix, cid)
    assert live_events == of_run(stored, run_id)
    assert live_events[-1].event == "run.completed"

    idle = await b.api.run_stream(cid, "active")
    assert idle.status == 204

    # Named, after the fact, and resumed from the middle: both end at the terminal event.
    second = (await a.api.start_run(cid, "q2", tokens=5, interval_ms=1))["run_id"]
    await a.api.wait_run_finished(cid, second)
    async with await a.api.run_stream(cid, run_id) as replay:
        assert await replay.read_to_end(timeout=10) == of_run(stored, run_id)
    half = len(live_events) // 2
    async with await b.api.run_stream(cid, run_id, last_event_id=live_events[half].id) as resumed:
        assert await resumed.read_to_end(timeout=10) == live_events[half + 1 :]


async def test_sse_headers_retry_line_and_keepalive_comments(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1, keepalive_seconds=0.5)
    (front,) = stack.fronts
    cid = new_cid()
    run_id = (await front.api.start_run(cid, "hello", tokens=3, interval_ms=1))["run_id"]
    await front.api.wait_run_finished(cid, run_id)

    stream = await front.api.stream(cid, headers={"Accept-Encoding": "gzip, deflate, br"})
    async with stream:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-cache, no-transform"
        assert stream.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in stream.headers
        await stream.read_until(terminal_of(run_id))
        assert stream.parser.retry is not None and stream.parser.retry > 0
        # An idle conversation: only keepalive comments keep the connection warm.
        await stream.wait_comments(2, timeout=15)
        assert all(text == "keepalive" for _, text in stream.parser.comments)
    assert stream.events == stored_events(redis_client, prefix, cid)


async def test_dropping_the_connection_does_not_stop_generation(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1)
    (front,) = stack.fronts
    cid = new_cid()
    run_id = (await front.api.start_run(cid, "keep going", tokens=100, interval_ms=10))["run_id"]

    conversation = await front.api.stream(cid)
    await conversation.read_until(nth_delta(3))
    run_only = await front.api.run_stream(cid, run_id)
    await run_only.next()
    await asyncio.gather(conversation.close(), run_only.close())

    await front.api.wait_run_finished(cid, run_id, timeout=60)
    stored = stored_events(redis_client, prefix, cid)
    assert stored[-1].event == "run.completed"
    assert len(answer_text(stored, run_id).split()) == 100
    assert (await front.api.snapshot(cid)).json()["messages"][-1]["status"] == "completed"


async def test_every_stream_begins_with_its_retry_field(stack: Stack) -> None:
    """The SSE contract: ``retry:`` in the first frame of every stream, whatever follows it
    (a replay, a reset, a run's stream, a stream still waiting for its conversation)."""
    stack.start(fronts=1, workers=1)
    api = stack.fronts[0].api
    cid = new_cid("retry")
    run = await api.start_run(cid, "hi", tokens=3, interval_ms=1)
    await api.wait_run_finished(cid, run["run_id"])
    opened = [
        await api.stream(cid),
        await api.stream(cid, last_event_id="1-0"),  # a reset follows
        await api.run_stream(cid, run["run_id"]),
        await api.stream(new_cid("not-yet")),
    ]
    for stream in opened:
        async with stream:
            assert stream.status == 200
            with contextlib.suppress(TimeoutError):
                await stream.next(timeout=1)
            assert stream.opening.startswith(b"retry: 1000\n\n"), stream.opening
