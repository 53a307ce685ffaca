"""The live path's own rules, each attempted: notices lost with a killed subscription
connection, and a position inside the stream that is none of its entries.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.helpers import new_cid, nth_delta, terminal_of
from tests.stack import Stack
from tests.stored import stored_events

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_streams_recheck_redis_after_their_subscription_connection_is_killed(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """Whatever is published while a front's subscription connection is down is lost; the
    front must notice the reconnect and read what its clients missed, terminal included."""
    stack.start(fronts=1, workers=1, coalesce_ms=0)
    (front,) = stack.fronts
    cid = new_cid("killed")
    run_id = (await front.api.start_run(cid, "keep going", tokens=400, interval_ms=4))["run_id"]
    async with await front.api.stream(cid) as stream:
        await stream.read_until(nth_delta(20))
        killed = 0
        for _ in range(4):
            killed += redis_client.client_kill_filter(_type="pubsub")
            await asyncio.sleep(0.2)
        assert killed, "no subscription connection was killed"
        await stream.read_until(terminal_of(run_id), timeout=60)
    assert stream.events == stored_events(redis_client, prefix, cid)


@pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True)
async def test_a_position_between_two_entries_gets_reset_and_the_whole_stream(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """Within the stream's span but none of its entries: no client was sent it, or it was
    lost in a failover. Either way resuming after it would be a guess: reset instead."""
    stack.start(fronts=1, workers=1, coalesce_ms=0)
    (front,) = stack.fronts
    cid = new_cid("between")
    run_id = (await front.api.start_run(cid, "q", tokens=30, interval_ms=5))["run_id"]
    await front.api.wait_run_finished(cid, run_id)
    stored = stored_events(redis_client, prefix, cid)
    pairs = zip(stored, stored[1:], strict=False)
    ms = [
        int(a.id.split("-")[0])
        for a, b in pairs
        if int(b.id.split("-")[0]) > int(a.id.split("-")[0]) + 1
    ]
    assert ms, "entries too close together to find a gap"
    between = f"{ms[0] + 1}-0"
    async with await front.api.stream(cid, last_event_id=between) as stream:
        events = await stream.read_until(terminal_of(run_id))
    assert events[0].event == "reset" and events[0].id is None
    assert events[0].json()["reason"] == "unknown_position"
    assert events[1:] == stored
