"""Limits with clear errors: open streams per conversation on one front."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import new_cid
from tests.stack import Stack

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
