"""Redis connections retry a command after a connection error (broker/core/connections.py), so
a script whose reply was lost may run twice: each one must answer the repeat as it answered the
first call, and write nothing twice."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from broker.core.ids import new_id
from broker.core.settings import Settings
from broker.core.store import Store
from tests.helpers import new_cid
from tests.stored import stored_events

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[Store]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield Store(client, Settings(redis_url=redis_url, key_prefix=prefix))
    await client.aclose()


async def test_a_repeated_accept_answers_as_the_first_and_writes_one_message(
    store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    cid, run_id = new_cid("repeat"), new_id("r")
    fields = dict(
        run_id=run_id,
        message_id=new_id("m"),
        assistant_message_id=new_id("m"),
        model="simulated",
        data=b'{"message_id":"m","content":"hi","run_id":"r","role":"user"}',
        idempotency_key=None,
        idempotency_record="",
    )
    first = await store.accept(cid, **fields)  # type: ignore[arg-type]
    again = await store.accept(cid, **fields)  # type: ignore[arg-type]
    assert first.outcome == "ok" and again == first
    assert len(stored_events(redis_client, prefix, cid)) == 1
    other = await store.accept(cid, **{**fields, "run_id": new_id("r")})  # type: ignore[arg-type]
    assert other.outcome == "run_active" and other.active_run == run_id
