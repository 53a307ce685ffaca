"""Limits with clear errors: open streams per conversation on one front; requests, posts, open
streams, new conversations and active runs per subject, counted in Redis for all fronts."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis

from tests.api import error_code
from tests.helpers import new_cid
from tests.sse import SSEStream
from tests.stack import Front, Stack
from tests.tokens import AUTH, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_streams_per_conversation_are_capped_and_released_on_disconnect(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, max_streams_per_conversation=3)
    (front,) = stack.fronts
    cid, other = new_cid("cap"), new_cid("other")
    await front.api.start_run(cid, "hi")
    await front.api.start_run(other, "hi")

    streams = [await front.api.stream(cid) for _ in range(3)]
    assert [s.status for s in streams] == [200, 200, 200]
    refused = await front.api.stream(cid)
    assert refused.status == 429
    assert refused.response.json()["error"]["code"] == "too_many_streams"
    assert refused.headers["retry-after"]
    run_refused = await front.api.run_stream(cid, "active")
    assert run_refused.status == 429
    # Another conversation is not affected.
    async with await front.api.stream(other) as unaffected:
        assert unaffected.status == 200

    await streams.pop().close()
    for _ in range(50):  # the front notices the disconnect asynchronously
        again = await front.api.stream(cid)
        if again.status == 200:
            break
        await asyncio.sleep(0.1)
    assert again.status == 200
    streams.append(again)
    for stream in streams:
        await stream.close()


async def test_streams_per_client_address_and_per_front_are_bounded(stack: Stack) -> None:
    """Whatever subjects it holds tokens of, one address cannot hold every stream of a front;
    and a full front says so with a 503 a load balancer can act on."""
    stack.start(fronts=0, workers=0, **AUTH, max_streams_per_address=2)
    front = stack.front()
    full = stack.front(max_streams_per_address=0, max_streams=3)

    async def stream(target: Front, subject: str) -> SSEStream:
        cid = new_cid(subject)
        headers = {"Authorization": "Bearer " + hs256(subject)}
        assert (await target.api.post_message(cid, headers=headers)).status_code == 202
        return await target.api.stream(cid, headers=headers)

    held = [await stream(front, "alice"), await stream(front, "bob")]
    assert [s.status for s in held] == [200, 200]
    refused = await stream(front, "carol")  # a third subject, the same address
    assert refused.status == 429
    assert refused.response.json()["error"]["code"] == "too_many_streams"
    assert "client address" in refused.response.json()["error"]["message"]
    await held.pop().close()
    for _ in range(50):  # the front notices the disconnect asynchronously
        again = await stream(front, "carol")
        if again.status == 200:
            break
        await again.close()
        await asyncio.sleep(0.1)
    assert again.status == 200
    held.append(again)

    held += [await stream(full, f"s{n}") for n in range(3)]
    assert [s.status for s in held[-3:]] == [200, 200, 200]
    over = await stream(full, "dave")
    assert over.status == 503
    assert over.response.json()["error"]["code"] == "front_full"
    assert over.headers["retry-after"]
    for opened in held:
        await opened.close()


# Limits per subject, shared by all fronts: each one exceeded on one front, then across two.


async def _fresh_minute() -> None:
    """The request and post limits slide over one-minute counters: start well inside a minute,
    so a test's requests all fall in it."""
    if time.time() % 60 > 50:
        await asyncio.sleep(60.2 - time.time() % 60)


def _refusal(response: httpx.Response, code: str) -> str:
    assert response.status_code == 429, response.text
    assert error_code(response) == code
    assert int(response.headers["retry-after"]) >= 1
    return response.json()["error"]["message"]


async def test_requests_per_minute_are_counted_across_fronts(stack: Stack) -> None:
    stack.start(fronts=2, workers=0, **AUTH, limit_requests_per_minute=6)
    a, b = stack.fronts
    await _fresh_minute()
    token = hs256("alice")
    cid = new_cid()
    assert (await a.api.bearer(token).post_message(cid)).status_code == 202
    for front in (a, b, a, b, a):
        assert (await front.api.bearer(token).snapshot(cid)).status_code == 200
    for front in (a, b):
        refused = await front.api.bearer(token).snapshot(cid)
        assert "6 requests" in _refusal(refused, "rate_limited")
        # All six fell in this minute: the sliding count drops below 6 as the next one begins.
        assert int(refused.headers["retry-after"]) <= 61 - time.time() % 60
        async with await front.api.bearer(token).stream(cid) as refused:
            assert refused.status == 429
    # Another subject, and the application's backend, are not held back.
    assert (await b.api.bearer(hs256("bob")).snapshot(new_cid())).status_code == 404
    admin = a.api.bearer(hs256("backend", admin=True))
    for _ in range(10):
        assert (await admin.snapshot(cid)).status_code == 200


async def test_without_authentication_the_subject_is_the_client_address(stack: Stack) -> None:
    stack.start(fronts=2, workers=0, limit_requests_per_minute=3)
    a, b = stack.fronts
    await _fresh_minute()
    cid = new_cid()
    assert (await a.api.post_message(cid)).status_code == 202
    assert (await b.api.snapshot(cid)).status_code == 200
    assert (await a.api.snapshot(cid)).status_code == 200
    _refusal(await b.api.snapshot(cid), "rate_limited")


async def test_posts_per_minute_are_counted_across_fronts(stack: Stack) -> None:
    stack.start(fronts=2, workers=0, **AUTH, limit_posts_per_minute=2)
    a, b = stack.fronts
    await _fresh_minute()
    token = hs256("alice")
    assert (await a.api.bearer(token).post_message(new_cid())).status_code == 202
    assert (await b.api.bearer(token).post_message(new_cid())).status_code == 202
    for front in (a, b):
        message = _refusal(await front.api.bearer(token).post_message(new_cid()), "rate_limited")
        assert "2 messages" in message
    # Reading is not posting.
    assert (await a.api.bearer(token).snapshot(new_cid())).status_code == 404
    assert (await a.api.bearer(hs256("bob")).post_message(new_cid())).status_code == 202


async def test_open_streams_are_counted_across_fronts_and_a_dead_front_stops_counting(
    stack: Stack,
) -> None:
    stack.start(fronts=2, workers=0, **AUTH, limit_streams_per_subject=2, stream_lease_seconds=3)
    a, b = stack.fronts
    alice = hs256("alice")
    cid = new_cid()
    assert (await a.api.bearer(alice).post_message(cid)).status_code == 202
    on_a = await a.api.bearer(alice).stream(cid)
    on_b = await b.api.cookie(alice).run_stream(cid, "active")
    assert (on_a.status, on_b.status) == (200, 200)
    for front in (a, b):
        refused = await front.api.bearer(alice).stream(cid)
        assert refused.status == 429
        assert refused.response.json()["error"]["code"] == "too_many_streams"
        assert refused.headers["retry-after"]
    # A refused stream holds none of its subject's streams: bob's limit is 2 too.
    bob = a.api.bearer(hs256("bob"))
    for _ in range(3):
        assert (await bob.stream(cid)).status == 404

    await on_a.close()  # a client that goes away frees its stream at once, on any front
    again = await _eventually_admitted(b, alice, cid)
    b.kill()  # a front that dies releases nothing: its streams' leases have to run out
    await on_b.close()
    await again.close()
    assert (await a.api.bearer(alice).stream(cid)).status == 429
    died = time.monotonic()
    revived = await _eventually_admitted(a, alice, cid, within=10)
    assert time.monotonic() - died < 3 + 1  # within one lease
    await revived.close()


async def _eventually_admitted(front: Front, token: str, cid: str, within: float = 5) -> SSEStream:
    deadline = time.monotonic() + within
    while True:
        stream = await front.api.bearer(token).stream(cid)
        if stream.status == 200:
            return stream
        assert stream.status == 429, stream.response.body
        assert time.monotonic() < deadline, "the stream was never released"
        await asyncio.sleep(0.1)


async def test_new_conversations_per_day_are_counted_across_fronts(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1, **AUTH, limit_conversations_per_day=2)
    a, b = stack.fronts
    alice = hs256("alice")
    first, second, third = new_cid("one"), new_cid("two"), new_cid("three")
    run = await a.api.bearer(alice).start_run(first, "hi", tokens=1)
    await b.api.bearer(alice).start_run(second, "hi", tokens=1)
    for front in (a, b):
        message = _refusal(
            await front.api.bearer(alice).post_message(third), "too_many_conversations"
        )
        assert "2 new conversations" in message
    assert not list(redis_client.scan_iter(match=f"{prefix}:{{{third}}}*"))
    # Going on with a conversation one has is not creating one.
    await a.api.bearer(alice).wait_run_finished(first, run["run_id"])
    assert (await b.api.bearer(alice).post_message(first, "more")).status_code == 202
    assert (await a.api.bearer(hs256("bob")).post_message(third)).status_code == 202
    # A refused creation did not count: raised to 4 (a front with the new setting), alice has
    # exactly two more today, however often she was refused before.
    for _ in range(3):
        _refusal(await a.api.bearer(alice).post_message(new_cid()), "too_many_conversations")
    raised = stack.front(limit_conversations_per_day=4)
    for _ in range(2):
        assert (await raised.api.bearer(alice).post_message(new_cid())).status_code == 202
    _refusal(await raised.api.bearer(alice).post_message(new_cid()), "too_many_conversations")


async def test_active_runs_are_counted_across_workers_and_end_with_the_run(stack: Stack) -> None:
    stack.start(fronts=2, workers=2, **AUTH, limit_active_runs_per_subject=2)
    a, b = stack.fronts
    alice = hs256("alice")
    first, second, third = new_cid("one"), new_cid("two"), new_cid("three")
    await a.api.bearer(alice).start_run(first, "long", tokens=2000, interval_ms=20)
    run = await b.api.bearer(alice).start_run(second, "short", tokens=3, interval_ms=200)
    for front in (a, b):
        message = _refusal(await front.api.bearer(alice).post_message(third), "too_many_runs")
        assert "2 answers" in message
    # The same conversation is not a second run: its POST gets the run conflict.
    assert (await a.api.bearer(alice).post_message(first)).status_code == 409
    # A run that ended, without anyone telling the limit, stops counting: the next POST is let
    # in as soon as its run is over.
    await a.api.bearer(alice).wait_run_finished(second, run["run_id"])
    assert (
        await b.api.bearer(alice).post_message(third, tokens=50, interval_ms=100)
    ).status_code == 202
    _refusal(await a.api.bearer(alice).post_message(new_cid()), "too_many_runs")
    # A cancelled run too.
    assert (await a.api.bearer(alice).cancel(first, wait=True)).status_code == 200
    assert (await a.api.bearer(alice).post_message(new_cid(), tokens=1)).status_code == 202


async def test_zero_turns_a_limit_off(stack: Stack) -> None:
    stack.start(
        fronts=1,
        workers=0,
        **AUTH,
        max_content_chars=0,
        limit_requests_per_minute=0,
        limit_posts_per_minute=0,
        limit_streams_per_subject=0,
        limit_conversations_per_day=0,
        limit_active_runs_per_subject=0,
    )
    (front,) = stack.fronts
    alice = front.api.bearer(hs256("alice"))
    long_prompt = "word " * 60_000  # past the default 200,000 characters
    # 30 runs at once, none of them ends (no worker): past the default of 16 active runs.
    responses = await asyncio.gather(
        *(alice.post_message(new_cid(), long_prompt) for _ in range(30))
    )
    assert {r.status_code for r in responses} == {202}


async def test_a_limit_of_one_reads_as_english(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, max_streams_per_conversation=1, limit_posts_per_minute=1)
    (front,) = stack.fronts
    cid = new_cid("one")
    await front.api.start_run(cid, "hi")
    async with await front.api.stream(cid) as first:
        assert first.status == 200
        refused = await front.api.stream(cid)
        assert refused.status == 429
        message = refused.response.json()["error"]["message"]
        assert message == "this conversation already has 1 open stream here"
    second = await front.api.post_message(new_cid("one"))
    assert second.status_code == 429
    assert second.json()["error"]["message"] == "more than 1 message a minute"
