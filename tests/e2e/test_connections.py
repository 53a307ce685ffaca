"""One subscription connection: a front's Redis connections do not grow with its SSE clients.

500 SSE clients on one front, spread over a few conversations; the front's own connections
(named ``broker:front:<pid>`` in ``CLIENT LIST``) are counted at 10 clients and at 500, and must
stay under a bound that depends on the pool size only. Then every conversation gets a new run
and every client must receive it live, to the end.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.helpers import new_cid, terminal_of
from tests.sse import SSEStream
from tests.stack import Front, Stack
from tests.stored import stored_events

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]

POOL_SIZE = 6
BOUND = POOL_SIZE + 2  # the pool, plus the live subscription connection, plus one of slack
CLIENTS = 500
CONVERSATIONS = 5


def _front_connections(client: redis.Redis, front: Front) -> int:
    return sum(1 for c in client.client_list() if c.get("name") == front.client_name)


async def _open(front: Front, cid: str, last_event_id: str) -> SSEStream:
    stream = await front.api.stream(cid, last_event_id=last_event_id)
    assert stream.status == 200, stream.response.body
    return stream


async def test_connections_stay_flat_from_10_to_500_clients_and_all_get_live_events(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1, redis_pool_size=POOL_SIZE, keepalive_seconds=5)
    (front,) = stack.fronts
    cids = [new_cid(f"conv{i}") for i in range(CONVERSATIONS)]
    for cid in cids:
        run = await front.api.start_run(cid, "warm up", tokens=3, interval_ms=1)
        await front.api.wait_run_finished(cid, run["run_id"])
    starts = {cid: stored_events(redis_client, prefix, cid)[-1].id for cid in cids}

    # One conversation is live while clients arrive: its notices flow the whole time.
    busy = cids[0]
    busy_run = (await front.api.start_run(busy, "busy", tokens=4000, interval_ms=5))["run_id"]

    streams: list[tuple[str, SSEStream]] = []
    try:
        for i in range(10):
            cid = cids[i % CONVERSATIONS]
            streams.append((cid, await _open(front, cid, starts[cid])))
        await asyncio.sleep(0.5)
        at_10 = _front_connections(redis_client, front)

        while len(streams) < CLIENTS:
            batch = [
                cids[i % CONVERSATIONS]
                for i in range(len(streams), min(len(streams) + 50, CLIENTS))
            ]
            opened = await asyncio.gather(*(_open(front, cid, starts[cid]) for cid in batch))
            streams += list(zip(batch, opened, strict=True))
        await asyncio.sleep(0.5)
        at_500 = _front_connections(redis_client, front)

        print(f"front Redis connections: {at_10} at 10 clients, {at_500} at {CLIENTS}")
        assert 1 <= at_10 <= BOUND, f"{at_10} connections at 10 clients"
        assert at_500 <= BOUND, f"{at_500} connections at {CLIENTS} clients (at 10: {at_10})"

        # Everyone still gets live events: stop the busy run, start one more in every conversation.
        assert (await front.api.cancel(busy, wait=True)).status_code == 200
        runs = {
            cid: (await front.api.start_run(cid, "live", tokens=10, interval_ms=5))["run_id"]
            for cid in cids
        }
        await asyncio.gather(
            *(stream.read_until(terminal_of(runs[cid]), timeout=120) for cid, stream in streams)
        )
        assert _front_connections(redis_client, front) <= BOUND
    finally:
        await asyncio.gather(*(stream.close() for _, stream in streams))

    for cid, stream in streams:
        assert stream.events == stored_events(redis_client, prefix, cid, after=starts[cid])
    busy_events = stored_events(redis_client, prefix, busy)
    assert [e.event for e in busy_events if e.run_id == busy_run][-1] == "run.cancelled"
