"""Retention: the length cap trims old entries, a client behind it gets a reset, idle keys expire.

``STREAM_MAXLEN`` trims approximately (``MAXLEN ~``): Redis drops whole stream nodes of about
100 entries, so the run appends several hundred entries to a stream capped at 50.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.api import events_key
from tests.helpers import new_cid, terminal_of
from tests.sse import Event
from tests.stack import Stack
from tests.stored import stored_events

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _check_reset(events: list[Event], retained: list[Event]) -> None:
    """A ``reset`` without id naming the earliest retained entry, then exactly what is retained."""
    reset, replay = events[0], events[1:]
    assert reset.event == "reset"
    assert reset.id is None, "reset must not move the client's position"
    data = reset.json()
    assert set(data) == {"reason", "earliest_event_id"}
    assert isinstance(data["reason"], str) and data["reason"]
    assert data["earliest_event_id"] == retained[0].id
    assert replay == retained


async def test_a_client_behind_the_trimmed_history_gets_reset_then_the_retained_entries(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1, stream_maxlen=50, coalesce_ms=0)
    a, b = stack.fronts
    cid = new_cid()
    run = await a.api.start_run(cid, "many words", tokens=600, interval_ms=2)
    held = run["event_id"]  # the first entry ever: the client saw the user's message, then left

    # While the run goes on past the cap, the snapshot still knows it is running.
    async with asyncio.timeout(60):
        while stored_events(redis_client, prefix, cid)[0].id == held:
            await asyncio.sleep(0.01)
    middle_snapshot = (await b.api.snapshot(cid)).json()
    still_running = not any(e.is_terminal for e in stored_events(redis_client, prefix, cid))
    async with asyncio.timeout(60):
        while not any(e.is_terminal for e in stored_events(redis_client, prefix, cid)):
            await asyncio.sleep(0.05)

    retained = stored_events(redis_client, prefix, cid)
    assert retained[0].id != held, "trimming must have happened for this test to mean anything"
    assert len(retained) < 600
    assert retained[-1].event == "run.completed"

    async with await b.api.stream(cid, last_event_id=held) as stream:
        events = await stream.read_until(terminal_of(run["run_id"]))
    _check_reset(events, retained)

    async with await a.api.stream(cid, query_last_event_id=held) as stream:
        events = await stream.read_until(terminal_of(run["run_id"]))
    _check_reset(events, retained)

    # A retained position resumes exactly, with no reset.
    middle = retained[len(retained) // 2]
    async with await b.api.stream(cid, last_event_id=middle.id) as stream:
        events = await stream.read_until(terminal_of(run["run_id"]))
    assert events == retained[len(retained) // 2 + 1 :]

    # The snapshot folds only what is retained and still names the last entry.
    snapshot = (await a.api.snapshot(cid)).json()
    assert snapshot["last_event_id"] == retained[-1].id
    assert snapshot["active_run_id"] is None
    assert still_running, "the run ended before trimming could be observed"
    assert middle_snapshot["active_run_id"] == run["run_id"], (
        "a run whose first entries were trimmed is still the active run"
    )


async def test_a_position_past_the_end_of_the_stream_gets_reset(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """An id from elsewhere (another deployment, a stale tab) is not a position of this stream."""
    stack.start(fronts=1, workers=1)
    (front,) = stack.fronts
    cid = new_cid()
    run = await front.api.start_run(cid, "hello", tokens=5, interval_ms=1)
    await front.api.wait_run_finished(cid, run["run_id"])
    stored = stored_events(redis_client, prefix, cid)
    last_ms = int(stored[-1].id.split("-")[0])

    for future in (f"{last_ms + 3_600_000}-0", f"{last_ms}-999999"):
        async with await front.api.stream(cid, last_event_id=future) as stream:
            events = await stream.read_until(terminal_of(run["run_id"]))
        _check_reset(events, stored)

    # And the newest id itself is a fine position: nothing to replay, no reset, live follows.
    async with await front.api.stream(cid, last_event_id=stored[-1].id) as stream:
        second = await front.api.start_run(cid, "again", tokens=3, interval_ms=1)
        events = await stream.read_until(terminal_of(second["run_id"]))
    assert events == stored_events(redis_client, prefix, cid, after=stored[-1].id)


async def test_idle_conversations_carry_a_ttl_and_expire(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1, idle_ttl_seconds=2)
    (front,) = stack.fronts
    cid = new_cid()
    response = await front.api.post_message(
        cid, "short lived", headers={"Idempotency-Key": "ttl-check"}, tokens=3, interval_ms=1
    )
    assert response.status_code == 202, response.text
    await front.api.wait_run_finished(cid, response.json()["run_id"])

    keys = list(redis_client.scan_iter(match=f"{prefix}:{{{cid}}}*", count=1000))
    assert events_key(prefix, cid).encode() in keys
    for key in keys:
        assert redis_client.pttl(key) > 0, f"{key!r} would live forever"
    assert 0 < redis_client.pttl(events_key(prefix, cid)) <= 2000

    async with asyncio.timeout(15):
        while redis_client.exists(events_key(prefix, cid)):
            await asyncio.sleep(0.2)
    assert (await front.api.snapshot(cid)).status_code == 404
    # Its stream is now that of a conversation not created yet: it waits for a first message.
    async with await front.api.stream(cid) as waiting:
        assert waiting.status == 200
