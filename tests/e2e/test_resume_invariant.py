"""No gap, no duplicate, under load: whatever position and front a client resumes at.

One long run appends continuously while 200 clients connect at random moments, each from a
position taken from the stream so far (or none; in the header or, for some, the query), to a
random one of two fronts. Many positions are the newest entry at that instant, the exact
point where a client's replay hands over to the live tail while entries keep arriving. Each
client's events must equal the stored stream after its position, in order, once each.
"""

from __future__ import annotations

import asyncio
import random
from typing import NamedTuple

import pytest
import redis
import redis.asyncio

from tests.conftest import RedisTarget
from tests.helpers import new_cid, terminal_of
from tests.sse import Event
from tests.stack import Front, Stack
from tests.stored import stored_events, stored_events_async

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(180),
    pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True),
]

CLIENTS = 200
TOKENS = 1500


class Outcome(NamedTuple):
    front: str
    position: str | None
    events: list[Event]
    finished: bool  # False: the terminal event never came within the bound


async def _client(
    front: Front, cid: str, run_id: str, position: str | None, in_query: bool
) -> Outcome:
    if in_query:  # a fresh EventSource can only say where it was in the URL
        stream = await front.api.stream(cid, query_last_event_id=position)
    else:
        stream = await front.api.stream(cid, last_event_id=position)
    async with stream:
        assert stream.status == 200, stream.response.body
        try:
            await stream.read_until(terminal_of(run_id), timeout=60)
        except TimeoutError:
            return Outcome(front.name, position, stream.events, False)
    return Outcome(front.name, position, stream.events, True)


@pytest.mark.parametrize("seed", [20240611])
async def test_every_client_gets_exactly_the_events_after_its_position(
    stack: Stack, redis_target: RedisTarget, redis_client: redis.Redis, prefix: str, seed: int
) -> None:
    # 200 clients on one event loop: on a loaded machine a client may send its request head
    # seconds after connecting, which the idle-connection bound (not tested here) would refuse.
    stack.start(fronts=2, workers=1, coalesce_ms=0, idle_connection_seconds=60)
    rng = random.Random(seed)
    cid = new_cid("load")
    first = stack.fronts[0]
    run_id = (await first.api.start_run(cid, "go", tokens=TOKENS, interval_ms=2))["run_id"]

    # Launches are paced by the run's progress, not by the clock, so they spread over the
    # run on a fast machine and a slow one alike. Positions never include the terminal event:
    # every client must receive at least that.
    aredis = (
        redis.asyncio.RedisCluster.from_url(redis_target.url)
        if redis_target.cluster
        else redis.asyncio.Redis.from_url(redis_target.url)
    )
    tasks: list[asyncio.Task[Outcome]] = []
    so_far: list[Event] = []
    try:
        async with asyncio.timeout(120):
            while len(tasks) < CLIENTS:
                so_far += await stored_events_async(
                    aredis, prefix, cid, after=so_far[-1].id if so_far else None
                )
                ended = any(e.is_terminal for e in so_far)
                candidates = [e for e in so_far if not e.is_terminal]
                due = CLIENTS if ended else len(so_far) * CLIENTS * 5 // (TOKENS * 4)
                while len(tasks) < min(due, CLIENTS):
                    choice = rng.random()
                    if choice < 0.1:
                        position = None
                    elif choice < 0.5:
                        position = candidates[-1].id  # the tail edge: replay meets live at once
                    else:
                        position = rng.choice(candidates).id
                    front = rng.choice(stack.fronts)
                    in_query = position is not None and rng.random() < 0.25
                    tasks.append(
                        asyncio.create_task(_client(front, cid, run_id, position, in_query))
                    )
                await asyncio.sleep(0.005)
        results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await aredis.aclose()

    stored = stored_events(redis_client, prefix, cid)
    assert stored[-1].event == "run.completed" and stored[-1].run_id == run_id, stored[-1]
    assert sum(e.event == "delta" for e in stored) == TOKENS, "COALESCE_MS=0: one delta per token"
    stuck = [(o.front, o.position, len(o.events)) for o in results if not o.finished]
    assert not stuck, (
        f"{len(stuck)} clients never got the terminal event (front, position, got): {stuck[:10]}"
    )
    still_running = 0
    for outcome in results:
        expected = stored_events(redis_client, prefix, cid, after=outcome.position)
        assert outcome.events == expected, (
            f"client of {outcome.front} after {outcome.position}: "
            f"{len(outcome.events)} events, {len(expected)} stored"
        )
        still_running += len(expected) > 1
    # The scenario is only meaningful if most clients joined while the run was appending.
    assert still_running > CLIENTS // 2
