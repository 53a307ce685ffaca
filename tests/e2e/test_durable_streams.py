"""Durable Streams beyond the conformance suite: who may touch a stream, the read-only
conversation view (also through the protocol's own Python client), and retention.

The suite (``test_durable_streams_conformance.py``) checks the protocol with BROKER_AUTH=none;
these tests attempt what it cannot: another subject's reads and writes, writes to a
conversation's view, and a read from an offset that retention has dropped.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from durable_streams import astream

from tests.api import error_code
from tests.helpers import new_cid
from tests.stack import Stack
from tests.tokens import AUTH, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _client(base_url: str, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, trust_env=False, timeout=10)


async def _next_event(lines: AsyncIterator[str]) -> list[str]:
    """The lines of the next SSE event (comments skipped)."""
    event: list[str] = []
    async for line in lines:
        if line == "" and event:
            return event
        if line and not line.startswith(":"):
            event.append(line)
    return event


async def test_a_stream_belongs_to_the_subject_that_created_it(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, **AUTH)
    url = stack.fronts[0].url
    path = "/v1/stream/" + new_cid("owned") + "/log"
    plain = {"Content-Type": "text/plain"}
    async with (
        _client(url, hs256("alice")) as alice,
        _client(url, hs256("mallory")) as mallory,
        _client(url, hs256("backend", admin=True)) as admin,
    ):
        created = await alice.put(path, content=b"secret", headers=plain)
        assert created.status_code == 201, created.text
        tail = created.headers["Stream-Next-Offset"]

        attempts: dict[str, httpx.Response] = {
            "read": await mallory.get(path, params={"offset": "-1"}),
            "long-poll": await mallory.get(path, params={"offset": "now", "live": "long-poll"}),
            "sse": await mallory.get(path, params={"offset": "-1", "live": "sse"}),
            "head": await mallory.head(path),
            "append": await mallory.post(path, content=b"mine now", headers=plain),
            "close": await mallory.post(path, headers={"Stream-Closed": "true"}),
            "create again": await mallory.put(path, headers=plain),
            "delete": await mallory.delete(path),
            "fork": await mallory.put(path + "-copy", headers={"Stream-Forked-From": path}),
        }
        for name, response in attempts.items():
            assert response.status_code == 404, name
            if name != "head":
                assert error_code(response) == "stream_not_found", name
        assert (await mallory.head(path + "-copy")).status_code == 404  # no fork was made
        # A stream that does not exist gets the very same answer.
        missing = await mallory.get(path + "-nothing", params={"offset": "-1"})
        assert (missing.status_code, error_code(missing)) == (404, "stream_not_found")

        # Nothing changed: same data, same tail, still open.
        read = await alice.get(path, params={"offset": "-1"})
        assert (read.status_code, read.content) == (200, b"secret")
        assert read.headers["Stream-Next-Offset"] == tail
        assert "Stream-Closed" not in (await alice.head(path)).headers

        # An admin may read and write any stream; the owner may delete it.
        assert (await admin.get(path, params={"offset": "-1"})).content == b"secret"
        assert (await admin.post(path, content=b" and more", headers=plain)).status_code == 204
        assert (await alice.get(path, params={"offset": "-1"})).content == b"secret and more"
        assert (await alice.delete(path)).status_code == 204
        assert (await alice.head(path)).status_code == 404


async def test_without_a_token_nothing_is_read_or_written(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, **AUTH)
    async with _client(stack.fronts[0].url) as anonymous:
        path = "/v1/stream/" + new_cid("anon")
        assert (await anonymous.put(path)).status_code == 401
        assert (await anonymous.get(path, params={"offset": "-1"})).status_code == 401


async def test_a_conversation_reads_as_a_json_stream_with_its_own_access_check(
    stack: Stack,
) -> None:
    stack.start(fronts=1, workers=1, **AUTH)
    front = stack.fronts[0]
    alice_token = hs256("alice")
    alice = front.api.bearer(alice_token)
    cid = new_cid("view")
    accepted = await alice.start_run(cid, "hello there")
    await alice.wait_run_finished(cid, accepted["run_id"])
    path = f"/v1/stream/conversations/{cid}"

    async with (
        _client(front.url, alice_token) as owner,
        _client(front.url, hs256("mallory")) as mallory,
    ):
        read = await owner.get(path, params={"offset": "-1"})
        assert read.status_code == 200, read.text
        assert read.headers["Content-Type"] == "application/json"
        assert read.headers["Stream-Up-To-Date"] == "true"
        events: list[dict[str, Any]] = read.json()
        types = [event["type"] for event in events]
        assert types[0] == "message" and types[-1] == "run.completed", types
        assert events[0]["data"]["content"] == "hello there"
        assert all(event["data"]["run_id"] == accepted["run_id"] for event in events)

        # Resuming from an offset gives exactly what follows it.
        first = await owner.get(path, params={"offset": "-1"}, headers={})
        assert first.json() == events
        middle = await owner.get(path, params={"offset": read.headers["Stream-Next-Offset"]})
        assert middle.status_code == 200 and middle.json() == []

        # Somebody else sees no conversation at all, by any read.
        for params in ({"offset": "-1"}, {"offset": "now", "live": "long-poll"}):
            refused = await mallory.get(path, params=params)
            assert (refused.status_code, error_code(refused)) == (404, "conversation_not_found")

        # The view is read-only, for the owner too: messages go through the conversation API.
        for method in ("PUT", "POST", "DELETE"):
            write = await owner.request(
                method, path, content=b'{"x":1}', headers={"Content-Type": "application/json"}
            )
            assert (write.status_code, error_code(write)) == (405, "method_not_allowed"), method
        assert (await owner.get(path, params={"offset": "-1"})).json() == events

    # The protocol's own Python client follows the conversation end to end.
    async with astream(
        front.url + path, live=False, headers={"Authorization": f"Bearer {alice_token}"}
    ) as response:
        items = await response.read_json()
    assert items == events


async def test_an_offset_that_retention_dropped_is_gone_never_later_data(stack: Stack) -> None:
    # MAXLEN ~ trims whole nodes of 100 entries: 350 appends over a cap of 10 drop some.
    stack.start(fronts=1, workers=0, stream_maxlen=10)
    path = "/v1/stream/" + new_cid("trim")
    plain = {"Content-Type": "text/plain"}
    async with _client(stack.fronts[0].url) as client:
        assert (await client.put(path, headers=plain)).status_code == 201
        offsets = []
        for i in range(350):
            appended = await client.post(path, content=f"{i};".encode(), headers=plain)
            assert appended.status_code == 204
            offsets.append(appended.headers["Stream-Next-Offset"])
        for params in (
            {"offset": offsets[0]},
            {"offset": offsets[0], "live": "long-poll"},
            {"offset": offsets[0], "live": "sse"},
        ):
            gone = await client.get(path, params=params)
            assert (gone.status_code, error_code(gone)) == (410, "offset_gone"), params

        # From the start: what is kept, contiguous up to the last append.
        kept = await client.get(path, params={"offset": "-1"})
        assert kept.status_code == 200
        numbers = [int(n) for n in kept.text.rstrip(";").split(";")]
        assert numbers[0] > 0 and numbers == list(range(numbers[0], 350))
        # From a kept offset: exactly what follows it.
        after = numbers[0] + 5
        resumed = await client.get(path, params={"offset": offsets[after]})
        assert resumed.text == "".join(f"{i};" for i in range(after + 1, 350))


async def test_a_draining_front_ends_its_live_reads_and_readers_resume_elsewhere(
    stack: Stack,
) -> None:
    # Long waits, so only the drain can end these reads while the test runs.
    stack.start(fronts=2, workers=0, ds_long_poll_seconds=60, ds_sse_seconds=60)
    leaving, staying = stack.fronts
    path = "/v1/stream/" + new_cid("drain")
    plain = {"Content-Type": "text/plain"}
    async with _client(leaving.url) as old, _client(staying.url) as new:
        created = await new.put(path, content=b"a", headers=plain)
        tail = created.headers["Stream-Next-Offset"]
        sse_params = {"offset": tail, "live": "sse"}
        poll_params = {"offset": tail, "live": "long-poll"}
        async with old.stream("GET", path, params=sse_params, timeout=30) as sse:
            assert sse.status_code == 200
            lines = sse.aiter_lines()
            assert await anext(lines) == "event: control"  # caught up: now waiting live
            poll = asyncio.create_task(old.get(path, params=poll_params, timeout=30))
            await asyncio.sleep(0.2)  # let the long-poll start waiting
            leaving.signal(signal.SIGTERM)
            rest = [line async for line in lines]  # the stream ends, well before 60 s
            polled = await poll
        assert not any(line.startswith("event: data") for line in rest)
        assert polled.status_code == 204
        assert polled.headers["Stream-Next-Offset"] == tail
        # Elsewhere, from the offset each reader held: exactly what came after.
        assert (await new.post(path, content=b"b", headers=plain)).status_code == 204
        resumed = await new.get(path, params=poll_params)
        assert (resumed.status_code, resumed.content) == (200, b"b")


@pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True)
async def test_any_front_serves_any_stream_live_on_one_redis_or_a_cluster(stack: Stack) -> None:
    """A stream's keys share one slot, so its scripts run on a cluster; its notices go over
    sharded pub/sub there, so a live reader on one front hears appends made through another."""
    stack.start(fronts=2, workers=0)
    one, two = stack.fronts
    path = "/v1/stream/" + new_cid("shared") + "/events"
    as_json = {"Content-Type": "application/json"}
    async with _client(one.url) as first, _client(two.url) as second:
        created = await first.put(path, content=b'[{"n":0}]', headers=as_json)
        tail = created.headers["Stream-Next-Offset"]
        live = {"offset": tail, "live": "sse"}
        async with second.stream("GET", path, params=live, timeout=30) as sse:
            lines = sse.aiter_lines()
            assert (await _next_event(lines))[0] == "event: control"  # caught up, now live
            poll = asyncio.create_task(
                second.get(path, params={"offset": tail, "live": "long-poll"}, timeout=30)
            )
            appended = await first.post(path, content=b'[{"n":1},{"n":2}]', headers=as_json)
            assert appended.status_code == 204
            event = await _next_event(lines)
            assert event[0] == "event: data"
            assert "".join(line.removeprefix("data:") for line in event[1:]) == '[{"n":1},{"n":2}]'
            polled = await poll
        assert polled.status_code == 200 and polled.json() == [{"n": 1}, {"n": 2}]
        assert polled.headers["Stream-Next-Offset"] == appended.headers["Stream-Next-Offset"]

        # A fork made through one front reads the same through the other.
        fork = path + "-fork"
        forked = await second.put(
            fork, headers={"Stream-Forked-From": path, "Stream-Fork-Offset": tail}
        )
        assert forked.status_code == 201, forked.text
        assert (await first.post(fork, content=b'{"n":"f"}', headers=as_json)).status_code == 204
        read = await first.get(fork, params={"offset": "-1"})
        assert read.json() == [{"n": 0}, {"n": "f"}]
        assert (await first.get(path, params={"offset": "-1"})).json() == [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]


async def test_live_reads_count_as_the_subjects_open_streams(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, **AUTH, limit_streams_per_subject=1)
    path = "/v1/stream/" + new_cid("limited")
    plain = {"Content-Type": "text/plain"}
    async with _client(stack.fronts[0].url, hs256("alice")) as alice:
        assert (await alice.put(path, content=b"x", headers=plain)).status_code == 201
        live = {"offset": "now", "live": "sse"}
        async with alice.stream("GET", path, params=live, timeout=30) as held:
            assert held.status_code == 200
            for params in (live, {"offset": "now", "live": "long-poll"}, {"offset": "-1"}):
                refused = await alice.get(path, params=params)
                assert (refused.status_code, error_code(refused)) == (429, "too_many_streams")
            # Writes are requests, not streams.
            assert (await alice.post(path, content=b"y", headers=plain)).status_code == 204
        # Once the reader has gone, its stream is free again (released in the background).
        for _ in range(100):
            read = await alice.get(path, params={"offset": "-1"})
            if read.status_code != 429:
                break
            await asyncio.sleep(0.05)
        assert (read.status_code, read.content) == (200, b"xy")


@pytest.mark.parametrize("live", ["sse", "long-poll"])
async def test_the_python_client_follows_a_conversation_live(stack: Stack, live: str) -> None:
    """From the conversation's start, while a worker is still writing it, to the run's end."""
    stack.start(fronts=1, workers=1, **AUTH)
    front = stack.fronts[0]
    token = hs256("alice")
    alice = front.api.bearer(token)
    cid = new_cid("follow")
    run_id = (await alice.start_run(cid, "go on", tokens=100, interval_ms=10))["run_id"]
    seen: list[dict[str, Any]] = []
    async with astream(
        f"{front.url}/v1/stream/conversations/{cid}",
        offset="-1",
        live=live,
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        async with asyncio.timeout(60):
            async for item in response.iter_json():
                seen.append(item)
                if item["type"] == "run.completed":
                    break
    async with _client(front.url, token) as client:
        stored = await client.get(f"/v1/stream/conversations/{cid}", params={"offset": "-1"})
    assert seen == stored.json(), "every event once, in order"
    assert seen[-1]["data"]["run_id"] == run_id
    assert sum(event["type"] == "delta" for event in seen) > 1


async def test_a_conversations_view_counts_with_its_own_streams_on_a_front(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, max_streams_per_conversation=1)
    front = stack.fronts[0]
    cid = new_cid("bounded")
    assert (await front.api.post_message(cid)).status_code == 202
    view = f"/v1/stream/conversations/{cid}"
    async with await front.api.stream(cid) as conversation_stream:
        assert conversation_stream.status == 200
        async with _client(front.url) as client:
            refused = await client.get(view, params={"offset": "-1", "live": "sse"})
            assert (refused.status_code, error_code(refused)) == (429, "too_many_streams")
            # A read that holds nothing open is not bounded by it.
            assert (await client.get(view, params={"offset": "-1"})).status_code == 200


async def test_oversized_header_values_and_batches_are_refused_before_anything_is_stored(
    stack: Stack,
) -> None:
    """A client's TTL, producer numbers, Stream-Seq, batch size and cursor are bounded: each
    oversized one is a 4xx that stores nothing, never a server error or an unbounded write."""
    stack.start(fronts=1, workers=0)
    path = "/v1/stream/" + new_cid("bounds")
    json_type = {"Content-Type": "application/json"}
    async with _client(stack.fronts[0].url) as client:
        too_long_ttl = await client.put(path, headers={**json_type, "Stream-TTL": "9" * 20})
        assert too_long_ttl.status_code == 400, too_long_ttl.text
        assert (await client.head(path)).status_code == 404  # nothing was created
        assert (await client.put(path, headers=json_type)).status_code == 201

        producer = {"Producer-Id": "p", "Producer-Epoch": "9" * 5000, "Producer-Seq": "0"}
        huge_epoch = await client.post(path, content=b"[1]", headers={**json_type, **producer})
        assert huge_epoch.status_code == 400, huge_epoch.text
        long_id = {**producer, "Producer-Epoch": "0", "Producer-Id": "p" * 256}
        assert (
            await client.post(path, content=b"[1]", headers={**json_type, **long_id})
        ).status_code == 400
        long_seq = await client.post(
            path, content=b"[1]", headers={**json_type, "Stream-Seq": "s" * 256}
        )
        assert long_seq.status_code == 400, long_seq.text
        batch = b"[" + b",".join([b"0"] * 10_001) + b"]"
        too_many = await client.post(path, content=batch, headers=json_type)
        assert too_many.status_code == 413, too_many.text

        read = await client.get(path, params={"offset": "-1", "cursor": "\u00b2" + "9" * 5000})
        assert read.status_code == 200 and read.json() == [], read.text
