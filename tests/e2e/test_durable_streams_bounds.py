"""Durable Streams under pressure: what a reader, a writer and a fork may take, and for how long.

Each test pins one bound of the Durable Streams path: a live read is bound to the incarnation
of the stream it was authorized for and to its token's lifetime; a response, a fork, an
append and a subject's storage are bounded in bytes, messages and count.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio

from tests.api import error_code
from tests.helpers import new_cid
from tests.stack import Stack
from tests.tokens import AUTH, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

PLAIN = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}


def _client(base_url: str, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, trust_env=False, timeout=10)


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[list[str]]:
    """The SSE events of a response, each as its lines (comments skipped)."""
    event: list[str] = []
    async for line in lines:
        if line == "":
            if event:
                yield event
            event = []
        elif not line.startswith(":"):
            event.append(line)
    if event:
        yield event


async def _read_all(client: httpx.AsyncClient, path: str) -> list[object]:
    """Every message of a JSON stream, read on until up to date."""
    offset, items = "-1", []
    while True:
        read = await client.get(path, params={"offset": offset})
        assert read.status_code == 200, read.text
        items += read.json()
        offset = read.headers["Stream-Next-Offset"]
        if read.headers.get("Stream-Up-To-Date") == "true":
            return items


@pytest.mark.parametrize("initial", [b"", b"alice;"], ids=["empty", "written"])
async def test_a_live_reader_ends_when_its_stream_is_deleted_and_created_again_by_another(
    stack: Stack, initial: bytes
) -> None:
    """The reader's front is paused while alice's stream is deleted and mallory creates one
    under the same name and writes to it, so every notice of that lands between two wake-ups
    of the reader: it must end (SSE) or answer 404 (long-poll), never send mallory's data.
    (A reader of an empty stream reads from its very start, where no trimmed offset can
    give the change away.)"""
    stack.start(fronts=2, workers=0, **AUTH, ds_long_poll_seconds=30, ds_sse_seconds=60)
    reading, writing = stack.fronts
    path = "/v1/stream/" + new_cid("reborn")
    async with (
        _client(reading.url, hs256("alice")) as alice_reads,
        _client(writing.url, hs256("alice")) as alice,
        _client(writing.url, hs256("mallory")) as mallory,
    ):
        created = await alice.put(path, content=initial, headers=PLAIN)
        assert created.status_code == 201
        tail = created.headers["Stream-Next-Offset"]
        sse_params = {"offset": "-1" if not initial else tail, "live": "sse"}
        poll_params = {"offset": tail, "live": "long-poll"}
        async with alice_reads.stream("GET", path, params=sse_params, timeout=30) as sse:
            events = _events(sse.aiter_lines())
            assert (await anext(events))[0] == "event: control"  # caught up: waiting live
            poll = asyncio.create_task(alice_reads.get(path, params=poll_params, timeout=30))
            await asyncio.sleep(0.3)  # the long-poll is waiting too
            reading.signal(signal.SIGSTOP)
            try:
                assert (await alice.delete(path)).status_code == 204
                again = await mallory.put(path, content=b"mallory-secret;", headers=PLAIN)
                assert again.status_code == 201
                appended = await mallory.post(path, content=b"mallory-more;", headers=PLAIN)
                assert appended.status_code == 204
            finally:
                reading.signal(signal.SIGCONT)
            rest = [line async for event in events for line in event]
            polled = await poll
        assert not any("mallory" in line for line in rest), rest
        assert (polled.status_code, error_code(polled)) == (404, "stream_not_found")
        # Alice sees no stream there any more; mallory's is hers alone.
        assert (await alice.get(path, params={"offset": "-1"})).status_code == 404


async def test_a_conversation_view_reader_ends_when_the_conversation_is_taken_over(
    stack: Stack,
) -> None:
    """The same for the read-only view of a conversation deleted, then started again under
    the same id by another subject."""
    stack.start(fronts=2, workers=0, **AUTH, ds_sse_seconds=60)
    reading, writing = stack.fronts
    cid = new_cid("retaken")
    alice_api = writing.api.bearer(hs256("alice"))
    mallory_api = writing.api.bearer(hs256("mallory"))
    assert (await alice_api.post_message(cid, "alice's words")).status_code == 202
    view = f"/v1/stream/conversations/{cid}"
    async with _client(reading.url, hs256("alice")) as alice_reads:
        async with alice_reads.stream(
            "GET", view, params={"offset": "now", "live": "sse"}, timeout=30
        ) as sse:
            events = _events(sse.aiter_lines())
            assert (await anext(events))[0] == "event: control"
            reading.signal(signal.SIGSTOP)
            try:
                deleted = await alice_api.request("DELETE", f"/v1/conversations/{cid}")
                assert deleted.status_code in (200, 202, 204), deleted.text
                taken = await mallory_api.post_message(cid, "mallory-secret")
                assert taken.status_code == 202, taken.text
            finally:
                reading.signal(signal.SIGCONT)
            rest = [line async for event in events for line in event]
    assert not any("mallory" in line for line in rest), rest


async def test_live_reads_end_when_their_token_expires(stack: Stack) -> None:
    """An SSE read (of a stream and of a conversation's view) ends at the token's expiry with
    a last ``error`` event saying ``token_expired``; a long-poll answers 401 then, and data
    that comes after that reaches none of them."""
    stack.start(fronts=1, workers=0, **AUTH, jwt_leeway_seconds=0, ds_long_poll_seconds=30)
    front = stack.fronts[0]
    path = "/v1/stream/" + new_cid("expiring")
    cid = new_cid("expiring")
    lasting = hs256("alice", ttl=600)
    assert (await front.api.bearer(lasting).post_message(cid)).status_code == 202
    async with _client(front.url, lasting) as owner:
        assert (await owner.put(path, content=b"a", headers=PLAIN)).status_code == 201
        short = hs256("alice", ttl=3)
        async with _client(front.url, short) as reader:
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def sse_lines(url: str) -> list[str]:
                params = {"offset": "now", "live": "sse"}
                async with reader.stream("GET", url, params=params, timeout=30) as sse:
                    assert sse.status_code == 200
                    return [line async for event in _events(sse.aiter_lines()) for line in event]

            async def keep_writing() -> None:
                await asyncio.sleep(4)  # from after the token's expiry on
                while loop.time() - started < 8:
                    await owner.post(path, content=b"b", headers=PLAIN)
                    await asyncio.sleep(0.2)

            writer = asyncio.create_task(keep_writing())
            stream_read, view_read, polled = await asyncio.gather(
                sse_lines(path),
                sse_lines(f"/v1/stream/conversations/{cid}"),
                reader.get(path, params={"offset": "now", "live": "long-poll"}, timeout=30),
            )
            ended = loop.time() - started
            writer.cancel()
    for lines in (stream_read, view_read):
        assert lines[-2:] == ["event: error", lines[-1]], lines[-4:]
        assert '"code":"token_expired"' in lines[-1]
    assert ended < 6, f"the SSE reads went on {ended:.1f} s after a 3 s token was issued"
    assert (polled.status_code, error_code(polled)) == (401, "token_expired"), polled.text


async def test_a_read_of_many_large_messages_answers_a_bounded_prefix(stack: Stack) -> None:
    """Each catch-up response holds at most BROKER_DS_READ_MAX_BYTES of messages (one at
    least), without Stream-Up-To-Date; following Stream-Next-Offset reads the rest, in order."""
    stack.start(fronts=1, workers=0, ds_read_max_bytes=300_000)
    path = "/v1/stream/" + new_cid("large")
    bodies = [bytes([65 + i]) * 200_000 for i in range(5)]
    async with _client(stack.fronts[0].url) as client:
        assert (await client.put(path, headers=PLAIN)).status_code == 201
        for body in bodies:
            assert (await client.post(path, content=body, headers=PLAIN)).status_code == 204
        offset, got, sizes = "-1", b"", []
        while True:
            read = await client.get(path, params={"offset": offset})
            assert read.status_code == 200
            sizes.append(len(read.content))
            got += read.content
            offset = read.headers["Stream-Next-Offset"]
            if read.headers.get("Stream-Up-To-Date") == "true":
                break
        assert got == b"".join(bodies)
        assert max(sizes) <= 300_000 and len(sizes) >= 5, sizes

        # JSON: whole messages, as many as fit.
        json_path = path + "-json"
        assert (await client.put(json_path, headers=JSON)).status_code == 201
        item = b'"' + b"x" * 100_000 + b'"'
        batch = b"[" + b",".join([item] * 5) + b"]"
        assert (await client.post(json_path, content=batch, headers=JSON)).status_code == 204
        first = await client.get(json_path, params={"offset": "-1"})
        assert len(first.json()) == 2 and "Stream-Up-To-Date" not in first.headers
        # An SSE read sends the same bounded data events.
        params = {"offset": "-1", "live": "sse"}
        async with client.stream("GET", json_path, params=params, timeout=30) as sse:
            events = _events(sse.aiter_lines())
            data = await anext(events)
            assert data[0] == "event: data"
            assert sum(len(line) for line in data) < 300_000


@pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True)
async def test_stream_creation_storage_and_lifetime_are_bounded_per_subject(stack: Stack) -> None:
    """Streams created per day, bytes stored per subject and per stream, and a default TTL:
    each refusal is a documented 4xx that stores nothing, and deleting or expiring a stream
    gives its bytes back."""
    mib = 1 << 20
    stack.start(
        fronts=1,
        workers=0,
        **AUTH,
        limit_ds_streams_per_day=4,
        limit_ds_bytes_per_subject=3 * mib,
        ds_max_stream_bytes=mib + 1000,
        ds_default_ttl_seconds=2,
        max_body_bytes=mib,
    )
    base = "/v1/stream/" + new_cid("quota")
    body = b"x" * (mib - 100)
    async with (
        _client(stack.fronts[0].url, hs256("alice")) as alice,
        _client(stack.fronts[0].url, hs256("backend", admin=True)) as admin,
    ):
        # One stream holds at most BROKER_DS_MAX_STREAM_BYTES.
        assert (await alice.put(base + "/a", content=body, headers=PLAIN)).status_code == 201
        over = await alice.post(base + "/a", content=body, headers=PLAIN)
        assert (over.status_code, error_code(over)) == (413, "stream_too_large")
        assert (await alice.head(base + "/a")).headers["Stream-Next-Offset"] == (
            (await alice.get(base + "/a", params={"offset": "-1"})).headers["Stream-Next-Offset"]
        )
        # The subject holds at most 3 MiB, whichever streams hold it.
        assert (await alice.put(base + "/b", content=body, headers=PLAIN)).status_code == 201
        assert (await alice.put(base + "/c", content=body, headers=PLAIN)).status_code == 201
        full = await alice.put(base + "/d", content=body, headers=PLAIN)
        assert (full.status_code, error_code(full)) == (413, "storage_quota_exceeded")
        assert (await alice.head(base + "/d")).status_code == 404
        # Re-confirming an existing stream creates nothing and costs nothing.
        assert (await alice.put(base + "/c", headers=PLAIN)).status_code == 200
        # Deleting a stream gives its bytes back.
        assert (await alice.delete(base + "/b")).status_code == 204
        assert (await alice.put(base + "/d", content=body, headers=PLAIN)).status_code == 201
        # Four creations a day (the refused one and the re-confirmation did not count).
        refused = await alice.put(base + "/e", headers=PLAIN)
        assert (refused.status_code, error_code(refused)) == (429, "too_many_streams_created")
        assert int(refused.headers["Retry-After"]) > 0
        assert (await admin.put(base + "/admin", headers=PLAIN)).status_code == 201

        # A stream created without TTL or expiry gets the default TTL: not shown as its own,
        # and it is gone once nobody read or wrote it for that long; its bytes come back.
        head = await alice.head(base + "/d")
        assert "Stream-TTL" not in head.headers and "Stream-Expires-At" not in head.headers
        await asyncio.sleep(3)
        for name in ("/a", "/c", "/d"):
            assert (await alice.head(base + name)).status_code == 404
    stack.settings["limit_ds_streams_per_day"] = 0
    front = stack.front()
    async with _client(front.url, hs256("alice")) as alice:
        for name in ("/f", "/g", "/h"):
            created = await alice.put(base + name, content=body, headers=PLAIN)
            assert created.status_code == 201, created.text


async def test_a_write_holds_a_bounded_number_of_messages_and_each_one_counts(
    stack: Stack,
) -> None:
    """A JSON write of more than BROKER_DS_MAX_MESSAGES_PER_WRITE messages is refused before
    anything is written (each message is an XADD in the one script that holds Redis), and the
    per-minute limit counts messages, not requests."""
    stack.start(
        fronts=1,
        workers=0,
        **AUTH,
        ds_max_messages_per_write=1000,
        limit_ds_messages_per_minute=1500,
    )
    path = "/v1/stream/" + new_cid("batches")
    async with _client(stack.fronts[0].url, hs256("alice")) as alice:
        assert (await alice.put(path, headers=JSON)).status_code == 201
        too_many = b"[" + b",".join([b"1"] * 1001) + b"]"
        refused = await alice.post(path, content=too_many, headers=JSON)
        assert (refused.status_code, error_code(refused)) == (413, "too_many_messages")
        assert (await alice.get(path, params={"offset": "-1"})).json() == []
        created = await alice.put(path + "-2", content=too_many, headers=JSON)
        assert (created.status_code, error_code(created)) == (413, "too_many_messages")

        full = b"[" + b",".join([b"1"] * 1000) + b"]"
        assert (await alice.post(path, content=full, headers=JSON)).status_code == 204
        limited = await alice.post(
            path, content=b"[" + b",".join([b"2"] * 600) + b"]", headers=JSON
        )
        assert (limited.status_code, error_code(limited)) == (429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 1
        assert len(await _read_all(alice, path)) == 1000
        # Fewer messages still fit in the minute.
        assert (await alice.post(path, content=b"[3,4]", headers=JSON)).status_code == 204


async def test_a_fork_is_copied_in_bounded_pages_and_counts_in_its_subjects_storage(
    stack: Stack,
) -> None:
    """A fork's inherited entries are copied page by page, each one short script of at most
    500 entries (seen in Redis's slow log, which records every command's arguments), and
    they count in the storage of the subject that forks: three forks of a large stream do not
    multiply what a subject may store."""
    mib = 1 << 20
    stack.start(fronts=1, workers=0, **AUTH, limit_ds_bytes_per_subject=4 * mib)
    path = "/v1/stream/" + new_cid("source")
    redis_client = redis.asyncio.Redis.from_url(stack.redis_url)
    async with _client(stack.fronts[0].url, hs256("alice")) as alice, redis_client:
        assert (await alice.put(path, headers=JSON)).status_code == 201
        message = b'"' + b"m" * 400 + b'"'
        for _ in range(3):
            batch = b"[" + b",".join([message] * 1000) + b"]"
            assert (await alice.post(path, content=batch, headers=JSON)).status_code == 204
        source_items = await _read_all(alice, path)
        assert len(source_items) == 3000

        previous = await redis_client.config_get("slowlog-*")
        await redis_client.config_set("slowlog-log-slower-than", 0)
        await redis_client.config_set("slowlog-max-len", 100_000)
        await redis_client.slowlog_reset()
        try:
            forked = await alice.put(path + "-fork1", headers={"Stream-Forked-From": path})
            assert forked.status_code == 201, forked.text
            log = await redis_client.slowlog_get(100_000)
        finally:
            for name, value in previous.items():
                await redis_client.config_set(name, value)
        scripts = [entry for entry in log if entry["command"].upper().startswith(b"EVALSHA")]
        arguments = [_argument_count(entry["command"]) for entry in scripts]
        assert len(scripts) >= 6, arguments  # 3000 entries: several pages
        assert max(arguments) <= 3 * 500 + 10, arguments
        assert await _read_all(alice, path + "-fork1") == source_items

        # About 1.2 MB each: the source and a first fork fit in 4 MiB, a third copy does not.
        second = await alice.put(path + "-fork2", headers={"Stream-Forked-From": path})
        assert second.status_code == 201, second.text
        third = await alice.put(path + "-fork3", headers={"Stream-Forked-From": path})
        assert (third.status_code, error_code(third)) == (413, "storage_quota_exceeded")
        assert (await alice.head(path + "-fork3")).status_code == 404


async def _commands_of(redis_client: redis.asyncio.Redis, request: Any) -> list[bytes]:
    """The commands Redis ran while ``request`` (an awaitable) was answered, by its slow log
    (which records every command at a threshold of 0), oldest first."""
    previous = await redis_client.config_get("slowlog-*")
    await redis_client.config_set("slowlog-log-slower-than", 0)
    await redis_client.config_set("slowlog-max-len", 10_000)
    await redis_client.slowlog_reset()
    try:
        await request
        log = await redis_client.slowlog_get(10_000)
    finally:
        for name, value in previous.items():
            await redis_client.config_set(name, value)
    # Those a front sent (not those its scripts ran, nor this function's own).
    return [
        entry["command"].split()[0].upper()
        for entry in reversed(log)
        if entry.get("client_name", b"").startswith(b"broker:front")
    ]


async def test_an_append_is_one_script_that_checks_what_a_read_before_it_would(
    stack: Stack,
) -> None:
    """An uncounted append is one round trip (its script checks the stream exists, is not
    deleted and is the caller's), and every answer is what it was when the metadata was read
    first: a stream that is missing or another's is a 404 whatever is wrong with the request,
    and a body of another type than the stream's is a 409 even when it is malformed."""
    stack.start(fronts=1, workers=0, **AUTH)
    path = "/v1/stream/" + new_cid("one-trip")
    redis_client = redis.asyncio.Redis.from_url(stack.redis_url)
    url = stack.fronts[0].url
    async with (
        _client(url, hs256("alice")) as alice,
        _client(url, hs256("mallory")) as mallory,
        redis_client,
    ):
        assert (await alice.put(path, headers=JSON)).status_code == 201
        assert (await alice.put(path + "-text", headers=PLAIN)).status_code == 201
        assert (await alice.post(path + "-text", content=b"x", headers=PLAIN)).status_code == 204
        appended = alice.post(path, content=b'[{"a":1},{"b":2}]', headers=JSON)
        assert await _commands_of(redis_client, appended) == [b"EVALSHA"]
        assert await _read_all(alice, path) == [{"a": 1}, {"b": 2}]

        bad: dict[str, tuple[bytes, dict[str, str]]] = {
            "malformed": (b'{"a":', JSON),
            "empty array": (b"[]", JSON),
            "no body": (b"", JSON),
            "no content type": (b"x", {}),
            "producer": (b"1", {**JSON, "Producer-Id": "p"}),
            "seq": (b"1", {**JSON, "Stream-Seq": "s" * 300}),
        }
        for what, (content, headers) in bad.items():
            for target in (path, path + "-missing"):
                refused = await mallory.post(target, content=content, headers=headers)
                assert (refused.status_code, error_code(refused)) == (404, "stream_not_found"), (
                    what,
                    target,
                )
            mine = await alice.post(path, content=content, headers=headers)
            assert mine.status_code in (400, 415), (what, mine.text)
        mismatch = await alice.post(path + "-text", content=b'{"a":', headers=JSON)
        assert (mismatch.status_code, error_code(mismatch)) == (409, "content_type_mismatch")
        assert "text/plain" in mismatch.json()["error"]["message"]
        assert await _read_all(alice, path) == [{"a": 1}, {"b": 2}]
        assert (await alice.get(path + "-text", params={"offset": "-1"})).content == b"x"


async def test_a_counted_append_is_counted_in_the_incarnation_it_writes(stack: Stack) -> None:
    """A front remembers a stream's incarnation for the storage count of its next appends;
    once the stream is deleted and another subject creates it again, an append the first
    owner sends is refused as for a missing stream and its bytes are given back."""
    stack.start(fronts=1, workers=0, **AUTH, limit_ds_bytes_per_subject=1000)
    path = "/v1/stream/" + new_cid("incarnations")
    message = b'"' + b"m" * 598 + b'"'
    redis_client = redis.asyncio.Redis.from_url(stack.redis_url)
    url = stack.fronts[0].url
    async with (
        _client(url, hs256("alice")) as alice,
        _client(url, hs256("bob")) as bob,
        redis_client,
    ):
        assert (await alice.put(path, headers=JSON)).status_code == 201
        assert (await alice.post(path, content=message, headers=JSON)).status_code == 204
        # Remembered: the storage count and the append, one round trip each.
        counted = alice.post(path, content=b"1", headers=JSON)
        assert await _commands_of(redis_client, counted) == [b"EVALSHA", b"EVALSHA"]
        full = await alice.post(path, content=message, headers=JSON)
        assert (full.status_code, error_code(full)) == (413, "storage_quota_exceeded")
        assert (await alice.delete(path)).status_code == 204  # 601 bytes given back

        assert (await bob.put(path, headers=JSON)).status_code == 201
        stranger = await alice.post(path, content=message, headers=JSON)
        assert (stranger.status_code, error_code(stranger)) == (404, "stream_not_found")
        assert await _read_all(bob, path) == []
        assert (await bob.delete(path)).status_code == 204

        # Alice's refused append gave its bytes back: 600 fit in her 1000 again, 1200 do not.
        assert (await alice.put(path, headers=JSON)).status_code == 201
        assert (await alice.post(path, content=message, headers=JSON)).status_code == 204
        over = await alice.post(path, content=message, headers=JSON)
        assert (over.status_code, error_code(over)) == (413, "storage_quota_exceeded")
        assert len(await _read_all(alice, path)) == 1


def _argument_count(command: bytes) -> int:
    """The arguments of a slow-log entry: Redis keeps 32 and says how many more there were."""
    words = command.split()
    more = re.search(rb"\.\.\. \((\d+) more arguments\)", command)
    return (31 + int(more.group(1))) if more else len(words)
