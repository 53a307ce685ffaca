"""A client's position never steers what other clients receive.

Several clients on one front: one sends a forged ``Last-Event-ID`` (from the future, or the
largest id Redis can hold) to the run stream or the conversation stream, by header or by query,
and subscribes first; honest viewers of the same conversation, on both streams, must still get
every event live, and the forger gets ``reset`` and the retained history, never a server error.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
import redis

from tests.helpers import new_cid, terminal_of
from tests.sse import Event, SSEStream, open_sse
from tests.stack import Front, Stack
from tests.stored import of_run, stored_events

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

FUTURE = "99999999999999-0"
LARGEST = "18446744073709551615-18446744073709551615"
CASES = [
    (stream, position, via)
    for stream in ("run", "conversation")
    for position in (FUTURE, LARGEST)
    for via in ("header", "query")
]


async def _open(front: Front, cid: str, stream: str, position: str | None, via: str) -> SSEStream:
    path = f"/v1/conversations/{cid}/" + ("runs/active/stream" if stream == "run" else "stream")
    if position is not None and via == "query":
        path += "?last_event_id=" + quote(position, safe="")
    header = position if via == "header" else None
    opened = await open_sse(front.url, path, last_event_id=header)
    assert opened.status == 200, (stream, position, via, opened.response.body)
    return opened


async def _one_conversation(
    front: Front, redis_client: redis.Redis, prefix: str, case: tuple[str, str, str]
) -> None:
    stream, position, via = case
    cid = new_cid("forged")
    run_id = (await front.api.start_run(cid, "watch me", tokens=40, interval_ms=40))["run_id"]
    forger = await _open(front, cid, stream, position, via)
    first = await forger.next(timeout=10)  # by now the forger's feed is on its way to the tail
    await asyncio.sleep(0.3)
    viewers = [
        await _open(front, cid, "conversation", None, "header"),
        await _open(front, cid, "run", None, "header"),
    ]
    try:
        seen = [await viewer.read_until(terminal_of(run_id), timeout=20) for viewer in viewers]
        forged = [first] + await forger.read_until(terminal_of(run_id), timeout=20)
    finally:
        for opened in (forger, *viewers):
            await opened.close()
    stored = stored_events(redis_client, prefix, cid)
    assert seen[0] == stored, case
    assert seen[1] == of_run(stored, run_id), case
    assert forged[0].event == "reset" and forged[0].id is None, case
    assert forged[0].json()["reason"] == "unknown_position", case
    expected: list[Event] = stored if stream == "conversation" else of_run(stored, run_id)
    assert forged[1:] == expected, case


async def test_a_forged_position_gets_reset_and_never_holds_back_other_viewers(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1, coalesce_ms=0)
    (front,) = stack.fronts
    await asyncio.gather(*(_one_conversation(front, redis_client, prefix, c) for c in CASES))


async def test_the_forger_leaving_or_staying_changes_nothing_for_a_later_viewer(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """The forger subscribes first and leaves; a viewer who stayed and one who comes later
    both get the next run live."""
    stack.start(fronts=1, workers=1, coalesce_ms=0)
    (front,) = stack.fronts
    cid = new_cid("left")
    first_run = (await front.api.start_run(cid, "one", tokens=30, interval_ms=30))["run_id"]
    forger = await _open(front, cid, "run", FUTURE, "header")
    await forger.next(timeout=10)
    await asyncio.sleep(0.3)
    stayer = await _open(front, cid, "conversation", None, "header")
    await stayer.read_until(terminal_of(first_run), timeout=20)
    await forger.close()
    second_run = (await front.api.start_run(cid, "two", tokens=30, interval_ms=30))["run_id"]
    later = await _open(front, cid, "conversation", None, "header")
    try:
        await stayer.read_until(terminal_of(second_run), timeout=20)
        await later.read_until(terminal_of(second_run), timeout=20)
    finally:
        await stayer.close()
        await later.close()
    stored = stored_events(redis_client, prefix, cid)
    assert stayer.events == stored
    assert later.events == stored


async def test_what_lands_while_the_shared_tail_starts_reaches_its_first_clients(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """The tail starts after the stream's last entry, looked up once a client has replayed:
    entries written in between (here, the end of a quick run) reach that client at once, not
    only when a later entry comes (none does)."""
    stack.start(fronts=1, workers=1, coalesce_ms=0)
    (front,) = stack.fronts

    async def one(index: int) -> None:
        cid = new_cid(f"quick{index}")
        run_id = (await front.api.start_run(cid, "quick", tokens=8, interval_ms=2))["run_id"]
        opened = [await front.api.stream(cid), await front.api.run_stream(cid, run_id)]
        try:
            for stream in opened:
                await stream.read_until(terminal_of(run_id), timeout=10)
        finally:
            for stream in opened:
                await stream.close()
        stored = stored_events(redis_client, prefix, cid)
        assert opened[0].events == stored
        assert opened[1].events == of_run(stored, run_id)

    for batch in range(4):
        await asyncio.gather(*(one(batch * 10 + i) for i in range(10)))
