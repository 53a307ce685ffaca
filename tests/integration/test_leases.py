"""Job leases, called directly: a worker renews and releases only the jobs it still holds.

A worker paused past its lease wakes to find its job claimed by another worker: renewing must
not take the job back (it reports it lost instead), and finishing must not acknowledge the job
under the worker that holds it now.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from broker.core.settings import Settings
from broker.engine import Engine
from broker.engine.queue import GROUP

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def test_a_job_claimed_away_is_reported_lost_and_left_to_its_new_holder(
    client: redis.asyncio.Redis, redis_client: redis.Redis, prefix: str
) -> None:
    engine = Engine(Settings(key_prefix=prefix), "test", client=client)
    [jobs] = engine.queue.streams
    paused, other = engine.queue.leases("paused")[jobs], engine.queue.leases("other")[jobs]
    await paused.ensure_group()
    kept = await client.xadd(jobs, {b"j": b"{}"})
    taken = await client.xadd(jobs, {b"j": b"{}"})
    assert [handed.entry_id for handed in await paused.read_new(10, 100)] == [kept, taken]

    # The other worker claims one of them (its lease lapsed while the first was paused).
    await client.xclaim(jobs, GROUP, "other", 0, [taken], justid=True)

    assert await paused.renew([kept, taken]) == {taken}
    pending = {
        p["message_id"]: p["consumer"]
        for p in redis_client.xpending_range(jobs, GROUP, "-", "+", 10)
    }
    assert pending == {kept: b"paused", taken: b"other"}, "renewing took a job back"

    await paused.release(taken)
    assert redis_client.xpending(jobs, GROUP)["pending"] == 2, "released another worker's job"
    assert redis_client.xlen(jobs) == 2
    await other.release(taken)
    await paused.release(kept)
    assert redis_client.xpending(jobs, GROUP)["pending"] == 0
    assert redis_client.xlen(jobs) == 0
