"""What Redis holds, in the same shape as what clients receive, so the two compare directly.

A stream entry's id is the SSE ``id:``, its ``t`` field the ``event:`` and its ``d`` field the
exact ``data:`` bytes; a client's event list must equal a range of the stream, nothing less.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio

from tests.api import events_key
from tests.sse import Event

Entries = list[tuple[bytes, dict[bytes, bytes]]]


def to_events(entries: Entries) -> list[Event]:
    return [
        Event(entry_id.decode(), fields[b"t"].decode(), fields[b"d"].decode())
        for entry_id, fields in entries
    ]


def _min(after: str | None) -> str:
    return "-" if after is None or after == "0-0" else "(" + after


def stored_events(
    client: redis.Redis, prefix: str, cid: str, after: str | None = None
) -> list[Event]:
    """Every retained entry of the conversation after ``after`` (exclusive), oldest first."""
    return to_events(client.xrange(events_key(prefix, cid), min=_min(after), max="+"))


async def stored_events_async(
    client: redis.asyncio.Redis, prefix: str, cid: str, after: str | None = None
) -> list[Event]:
    return to_events(await client.xrange(events_key(prefix, cid), min=_min(after), max="+"))


def of_run(events: Iterable[Event], run_id: str) -> list[Event]:
    return [e for e in events if e.run_id == run_id]


def answer_text(events: Iterable[Event], run_id: str, channel: str = "content") -> str:
    """The run's answer as a client assembles it: its deltas of one channel, concatenated."""
    parts = []
    for event in events:
        if event.event == "delta":
            data: dict[str, Any] = event.json()
            if data["run_id"] == run_id and data["channel"] == channel:
                parts.append(data["text"])
    return "".join(parts)


def terminals(events: Iterable[Event], run_id: str) -> list[Event]:
    return [e for e in events if e.is_terminal and e.run_id == run_id]


def assert_no_duplicates(events: list[Event]) -> None:
    ids = [e.id for e in events if e.id is not None]
    assert len(ids) == len(set(ids)), "an event arrived twice"


def assert_in_order(events: list[Event]) -> None:
    """Stream ids only grow: compare them as (ms, seq) pairs, the order Redis gives them."""
    positions = [tuple(int(part) for part in e.id.split("-")) for e in events if e.id is not None]
    assert positions == sorted(positions), "events arrived out of order"
