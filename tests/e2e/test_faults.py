"""Faults with real processes: Redis going away, Redis killed and restarted from its AOF, a
front draining on SIGTERM, a client that stops reading, and a reconnect storm.

The Redis faults need a Redis this test can stop and start, so they run their own
``redis-server`` (with ``appendfsync always``) instead of the session's.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from broker.embedded_redis import EmbeddedRedis, find_redis_server
from tests.helpers import new_cid, nth_delta, terminal_of
from tests.sse import Event, SSEParser, _Dechunker, _read_head, open_sse
from tests.stack import Stack
from tests.stored import assert_in_order, assert_no_duplicates, of_run, stored_events, terminals

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    if find_redis_server() is None:
        pytest.skip("needs a redis-server binary to stop and restart")
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True, appendfsync="always").start()
    yield server
    server.stop()


@pytest.fixture
def own_stack(own_redis: EmbeddedRedis, stack_on: Callable[[str, str], Stack]) -> Stack:
    """Broker processes on ``own_redis``, which outlives them (it is set up first)."""
    return stack_on(own_redis.url, "faults")


async def _read_across_outages(
    front_url: str, cid: str, run_id: str, timeout: float = 60
) -> list[Event]:
    """A client that, like EventSource, reconnects with its last id whenever the stream ends."""
    received: list[Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = received[-1].id if received else None
        try:
            stream = await open_sse(
                front_url, f"/v1/conversations/{cid}/stream", last_event_id=last
            )
        except (OSError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        async with stream:
            if stream.status != 200:
                assert stream.status == 503, stream.response.body
                assert stream.headers.get("retry-after")
                await asyncio.sleep(0.2)
                continue
            try:
                while True:
                    event = await stream.next(timeout=max(0.1, deadline - time.monotonic()))
                    if event is None:
                        break
                    received.append(event)
                    if event.is_terminal and event.run_id == run_id:
                        return received
            except TimeoutError:
                break
    raise AssertionError(f"no terminal event for {run_id} within {timeout}s")


async def test_redis_away_for_5s_gives_503s_then_everything_resumes_without_gap_or_duplicate(
    own_stack: Stack, own_redis: EmbeddedRedis
) -> None:
    own_stack.start(fronts=1, workers=1, coalesce_ms=0)
    (front,) = own_stack.fronts
    cid = new_cid("outage")
    run_id = (await front.api.start_run(cid, "through the outage", tokens=600, interval_ms=10))[
        "run_id"
    ]
    reader = asyncio.create_task(_read_across_outages(front.url, cid, run_id))
    await asyncio.sleep(1.0)

    own_redis.stop()  # a clean stop: the AOF keeps everything acknowledged
    statuses = []
    outage_end = time.monotonic() + 5
    async with httpx.AsyncClient(base_url=front.url, trust_env=False, timeout=10) as client:
        while time.monotonic() < outage_end:
            for response in (
                await client.get(f"/v1/conversations/{cid}"),
                await client.post(f"/v1/conversations/{new_cid()}/messages", json={"content": "x"}),
                await client.get("/readyz"),
            ):
                statuses.append(response.status_code)
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"]
                assert response.json()["error"]["code"] == "redis_unavailable"
            await asyncio.sleep(0.5)
    own_redis.start()  # again, on the same port and data directory (its AOF)

    events = await reader
    client = redis.Redis.from_url(own_redis.url)
    stored = stored_events(client, "faults", cid)
    client.close()
    assert events == stored, "the client's view differs from the stored stream"
    assert_no_duplicates(events)
    assert_in_order(events)
    ended = terminals(stored, run_id)
    assert len(ended) == 1
    assert ended[0].event == "run.completed"
    words = "".join(e.json()["text"] for e in of_run(stored, run_id) if e.event == "delta").split()
    assert len(words) == 600, "an append was lost or written twice across the outage"
    assert statuses, "the outage was never observed"


async def _requests(client: httpx.AsyncClient, cid: str, count: int) -> list[int]:
    """``count`` requests of every kind a load balancer or a client sends, 10 at a time."""

    async def one(index: int) -> int:
        match index % 4:
            case 0:
                response = await client.get("/readyz")
            case 1:
                response = await client.get(f"/v1/conversations/{cid}")
            case 2:
                response = await client.post(
                    f"/v1/conversations/{new_cid()}/messages",
                    json={"content": "x", "params": {"tokens": 1, "interval_ms": 0}},
                )
            case _:
                response = await client.post(f"/v1/conversations/{cid}/cancel")
        return response.status_code

    statuses: list[int] = []
    for start in range(0, count, 10):
        statuses += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 10))))
    return statuses


@pytest.mark.parametrize("outage", ["killed", "stopped"])
async def test_a_second_after_redis_answers_again_the_front_answers_every_request(
    own_stack: Stack, own_redis: EmbeddedRedis, outage: str
) -> None:
    """Every pooled connection from before the restart is dead; none of them may cost a
    request its answer once Redis is back (a load balancer would drop the front)."""
    own_stack.start(fronts=1, workers=1)
    (front,) = own_stack.fronts
    cid = new_cid("back")
    run_id = (await front.api.start_run(cid, "before", tokens=3, interval_ms=1))["run_id"]
    await front.api.wait_run_finished(cid, run_id)
    async with httpx.AsyncClient(
        base_url=front.url, trust_env=False, timeout=20, limits=httpx.Limits(max_connections=40)
    ) as client:
        # Many requests at once, so the front's pool holds many connections to go stale.
        before = await _requests(client, cid, 120)
        assert set(before) <= {200, 202, 409}, before
        own_redis.kill() if outage == "killed" else own_redis.stop()
        during = await _requests(client, cid, 8)
        assert set(during) == {503}, during
        own_redis.start()  # returns once Redis answers commands again
        await asyncio.sleep(1.0)
        after = await _requests(client, cid, 120)
    assert 503 not in after, f"{after.count(503)} of {len(after)} requests got 503: {after}"
    assert set(after) <= {200, 202, 409}, after


async def test_every_event_a_client_saw_survives_redis_being_killed_and_restarted_from_its_aof(
    own_stack: Stack, own_redis: EmbeddedRedis
) -> None:
    own_stack.start(fronts=1, workers=1, coalesce_ms=0)
    (front,) = own_stack.fronts
    cid = new_cid("aof")
    run_id = (await front.api.start_run(cid, "durable", tokens=2000, interval_ms=5))["run_id"]
    stream = await front.api.stream(cid)
    async with stream:
        seen = await stream.read_until(nth_delta(50))
        own_redis.kill()
        # Whatever else was in flight, everything already delivered was acknowledged first.
        try:
            while (event := await stream.next(timeout=2)) is not None:
                seen.append(event)
        except (TimeoutError, OSError):
            pass
    own_redis.start()  # again, on the same port and data directory (its AOF)
    client = redis.Redis.from_url(own_redis.url)
    stored = {e.id: e for e in stored_events(client, "faults", cid)}
    client.close()
    missing = [e.id for e in seen if stored.get(e.id) != e]
    assert not missing, f"{len(missing)} delivered events were lost in the restart"
    # And the run still ends, exactly once (the worker retries through the restart).
    events = await _read_across_outages(front.url, cid, run_id, timeout=90)
    assert len(terminals(events, run_id)) == 1


async def test_a_draining_front_ends_its_streams_cleanly_and_clients_resume_elsewhere(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1)
    leaving, staying = stack.fronts
    cid = new_cid("drain")
    run_id = (await leaving.api.start_run(cid, "keep going", tokens=300, interval_ms=10))["run_id"]
    stream = await leaving.api.stream(cid)
    async with stream:
        await stream.read_until(nth_delta(5))
        leaving.signal(signal.SIGTERM)
        await stream.read_to_end(timeout=10)  # the body ends properly, long before the run
        assert stream.parser.retry is not None and stream.parser.retry < 1000
    assert not any(e.is_terminal for e in stream.events)
    held = stream.events[-1].id
    async with await staying.api.stream(cid, last_event_id=held) as resumed:
        after = await resumed.read_until(terminal_of(run_id))
    assert stream.events + after == stored_events(redis_client, prefix, cid)
    # uvicorn shuts down cleanly, then exits by the signal it caught, as a service manager expects.
    assert leaving.popen.wait(timeout=15) in (0, -signal.SIGTERM)


async def test_a_client_that_stops_reading_catches_up_from_redis_without_slowing_others(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """Megabytes of events for a client that reads nothing: the front stops queueing for it,
    the other client gets everything meanwhile, and the slow one later gets every event once.

    45,000 one-word events are about 6 MB of SSE, more than loopback's socket buffers (4 MB at
    most here) hold, so the front really has to give up on queueing for the slow client."""
    stack.start(fronts=1, workers=1, coalesce_ms=0, client_queue_frames=64, stream_maxlen=100_000)
    (front,) = stack.fronts
    cid = new_cid("slow")
    run_id = (await front.api.start_run(cid, "flood", tokens=45000, interval_ms=0))["run_id"]

    slow_socket = socket.socket()
    # Small, but not below loopback's segment size: a window of a few KB can leave the sender
    # in zero-window probing, whose backoff (up to two minutes) is TCP's, not the front's.
    slow_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    slow_socket.connect(("127.0.0.1", front.port))
    slow_socket.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=slow_socket, limit=4096)
    try:
        writer.write(f"GET /v1/conversations/{cid}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _ = await _read_head(reader)
        assert status == 200
        async with await front.api.stream(cid) as fast:
            fast_events = await fast.read_until(terminal_of(run_id), timeout=120)

        dechunker, parser, slow_events = _Dechunker(), SSEParser(), []
        terminal = False
        async with asyncio.timeout(120):
            while not terminal:
                data = await reader.read(65536)
                assert data, "the slow client was disconnected"
                new = parser.feed(dechunker.feed(data))
                slow_events.extend(new)
                terminal = any(e.is_terminal for e in new)
    finally:
        writer.close()
    stored = stored_events(redis_client, prefix, cid)
    assert fast_events == stored
    assert slow_events == stored, "the slow client missed or repeated events while catching up"


async def test_a_reconnect_storm_of_2000_clients_is_served_without_errors(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1, coalesce_ms=0)
    cid = new_cid("storm")
    run_id = (await stack.fronts[0].api.start_run(cid, "storm", tokens=100, interval_ms=0))[
        "run_id"
    ]
    await stack.fronts[0].api.wait_run_finished(cid, run_id)
    stored = stored_events(redis_client, prefix, cid)
    rng = random.Random(7)

    async def one(index: int) -> tuple[str | None, list[Event]]:
        front = stack.fronts[index % 2]
        position = rng.choice([None] + [e.id for e in stored[:-1]])
        stream = await open_sse(
            front.url, f"/v1/conversations/{cid}/stream", last_event_id=position, timeout=60
        )
        async with stream:
            assert stream.status == 200, (stream.status, stream.response.body)
            return position, await stream.read_until(terminal_of(run_id), timeout=90)

    results = await asyncio.gather(*(one(i) for i in range(2000)))
    for position, events in results:
        start = (
            0 if position is None else next(i for i, e in enumerate(stored) if e.id == position) + 1
        )
        assert events == stored[start:]


@pytest.mark.parametrize("pause", [3.0, 12.0])
async def test_redis_paused_then_resumed_loses_and_repeats_nothing_for_any_client(
    own_stack: Stack, own_redis: EmbeddedRedis, pause: float
) -> None:
    """Redis stopped (SIGSTOP) mid-answer, shortly and past every socket timeout, with several
    clients on two fronts: each gets exactly the stored stream, and the run ends once."""
    own_stack.start(fronts=2, workers=1, coalesce_ms=0)
    cid = new_cid("redis_paused")
    run_id = (
        await own_stack.fronts[0].api.start_run(
            cid, "through the pause", tokens=400, interval_ms=10
        )
    )["run_id"]
    readers = [
        asyncio.ensure_future(_read_across_outages(front.url, cid, run_id, timeout=120))
        for front in own_stack.fronts
        for _ in range(3)
    ]
    await asyncio.sleep(1.0)
    assert own_redis.process is not None
    async with httpx.AsyncClient(
        base_url=own_stack.fronts[1].url, trust_env=False, timeout=30
    ) as http:
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            during = asyncio.ensure_future(http.get(f"/v1/conversations/{cid}"))
            await asyncio.sleep(pause)
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        snapshot = await during
    # Answered once Redis is back, or 503 after the store's timeout: never a server error.
    assert snapshot.status_code in (200, 503), snapshot.text

    results = await asyncio.gather(*readers)
    client = redis.Redis.from_url(own_redis.url)
    stored = stored_events(client, "faults", cid)
    client.close()
    for events in results:
        assert events == stored, "a client's view differs from the stored stream"
    ended = terminals(stored, run_id)
    assert [e.event for e in ended] == ["run.completed"]
    words = "".join(e.json()["text"] for e in of_run(stored, run_id) if e.event == "delta").split()
    assert len(words) == 400, "an append was lost or written twice across the pause"


async def test_a_paused_front_holds_back_no_other_front_and_its_clients_lose_nothing(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1, coalesce_ms=0)
    paused, other = stack.fronts
    cid = new_cid("front_paused")
    run_id = (await other.api.start_run(cid, "go on", tokens=300, interval_ms=15))["run_id"]
    streams = [await front.api.stream(cid) for front in (paused, paused, other, other)]
    try:
        for stream in streams:
            await stream.read_until(nth_delta(3), timeout=20)
        paused.signal(signal.SIGSTOP)
        try:
            before = [len(stream.events) for stream in streams[2:]]
            await asyncio.sleep(2.0)
            for stream in streams[2:]:
                await stream.read_until(nth_delta(len(stream.events) + 20), timeout=5)
            grew = [len(s.events) - n for s, n in zip(streams[2:], before, strict=True)]
        finally:
            paused.signal(signal.SIGCONT)
        await asyncio.gather(
            *(stream.read_until(terminal_of(run_id), timeout=30) for stream in streams)
        )
    finally:
        for stream in streams:
            await stream.close()
    assert all(count >= 20 for count in grew), grew
    stored = stored_events(redis_client, prefix, cid)
    for stream in streams:
        assert stream.events == stored


async def test_every_wait_ends_on_drain_with_its_documented_answer(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """A cancel waiting for a run that will not end soon, a Durable Streams long-poll and a
    stream waiting for a conversation nobody has posted to are all in flight when the front is
    told to stop: each ends within the server's graceful bound with its documented answer
    (202 cancelling, 204, the drain frame after ``retry:``), and nothing is logged at ERROR."""
    stack.start(fronts=1, workers=1, cancel_wait_seconds=60, ds_long_poll_seconds=60)
    (front,) = stack.fronts
    cid = new_cid("drain-wait")
    run_id = (await front.api.start_run(cid, "long", tokens=400, interval_ms=50))["run_id"]
    deadline = time.monotonic() + 20
    while redis_client.hget(f"{prefix}:{{{cid}}}:run:{run_id}", "status") != b"running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    stack.workers[0].signal(signal.SIGSTOP)  # the run is marked cancelling; nobody ends it
    try:
        async with httpx.AsyncClient(base_url=front.url, trust_env=False, timeout=30) as client:
            assert (await client.put("/v1/stream/drain-poll", content=b"")).status_code == 201
            cancel = asyncio.ensure_future(client.post(f"/v1/conversations/{cid}/cancel?wait=true"))
            poll = asyncio.ensure_future(
                client.get("/v1/stream/drain-poll", params={"offset": "-1", "live": "long-poll"})
            )
            waiting = await front.api.stream(new_cid("nobody-yet"))
            await asyncio.sleep(1)
            started = time.monotonic()
            front.signal(signal.SIGTERM)
            cancelled, polled = await asyncio.gather(cancel, poll)
            async with waiting:
                await waiting.read_to_end(timeout=10)
            assert time.monotonic() - started < 5, "a wait outlived the graceful bound"
    finally:
        stack.workers[0].signal(signal.SIGCONT)
    assert cancelled.status_code == 202
    assert cancelled.json() == {"run_id": run_id, "status": "cancelling"}
    assert polled.status_code == 204
    assert waiting.status == 200 and waiting.opening.startswith(b"retry: ")
    assert waiting.parser.retry is not None and waiting.parser.retry < 1000
    assert front.popen.wait(timeout=15) in (0, -signal.SIGTERM)
    assert " ERROR " not in front.output(), front.output()


async def test_a_full_redis_refuses_writes_with_503_and_a_run_rides_it_out(
    own_stack: Stack, own_redis: EmbeddedRedis
) -> None:
    """``maxmemory`` reached under ``noeviction``: what is stored is still served, every write
    is refused with its documented 503 (never a 500), and the run in flight loses nothing."""
    own_stack.start(fronts=1, workers=1, coalesce_ms=0)
    (front,) = own_stack.fronts
    cid = new_cid("full")
    run_id = (await front.api.start_run(cid, "through a full store", tokens=300, interval_ms=10))[
        "run_id"
    ]
    reader = asyncio.create_task(_read_across_outages(front.url, cid, run_id))
    await asyncio.sleep(0.5)
    admin = redis.Redis.from_url(own_redis.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", admin.info("memory")["used_memory"])  # full at once
    try:
        async with httpx.AsyncClient(base_url=front.url, trust_env=False, timeout=10) as client:
            refused = await client.post(
                f"/v1/conversations/{new_cid()}/messages", json={"content": "x"}
            )
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "store_full"
            assert refused.headers["retry-after"]
            snapshot = await client.get(f"/v1/conversations/{cid}")
            assert snapshot.status_code == 200, snapshot.text
        await asyncio.sleep(2.0)
    finally:
        admin.config_set("maxmemory", 0)
    events = await reader
    stored = stored_events(admin, "faults", cid)
    admin.close()
    assert events == stored
    ended = terminals(stored, run_id)
    assert len(ended) == 1 and ended[0].event == "run.completed", ended
    words = "".join(e.json()["text"] for e in of_run(stored, run_id) if e.event == "delta").split()
    assert len(words) == 300, "an append was lost or written twice while Redis was full"
