"""The Python client against real broker processes: typed events, resume, reconnect across a
killed front, giving up, reset, and typed errors.

What a client received is compared with what Redis stores, entry by entry, so "nothing lost,
nothing repeated" is checked, not assumed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
import redis

from broker.client import (
    AsyncBrokerClient,
    BadRequest,
    BrokerClient,
    BrokerUnavailable,
    Conflict,
    Delta,
    NotFound,
    ReconnectFailed,
    Reset,
    RunCompleted,
    UnknownEvent,
    UserMessage,
)
from broker.client.backoff import Backoff
from broker.client.sse import ServerSentEvent
from broker.client.tracking import StreamTracker
from broker.core.events import EVENT_NAMES, TERMINAL_EVENTS, decode
from tests.helpers import new_cid
from tests.stack import Front, Stack, free_port
from tests.stored import stored_events

pytestmark = pytest.mark.timeout(120)


def _received(items: list[tuple[str | None, Any]]) -> list[tuple[str | None, str, Any]]:
    return [(event_id, EVENT_NAMES[type(item)], item) for event_id, item in items]


def _stored(
    client: redis.Redis, prefix: str, cid: str, after: str | None = None
) -> list[tuple[str | None, str, Any]]:
    return [
        (e.id, e.event, decode(e.event, e.data.encode()))
        for e in stored_events(client, prefix, cid, after)
    ]


def _restart_later(stack: Stack, front: Front, after: float) -> threading.Thread:
    """Kill ``front`` now (SIGKILL) and start a new one on its port ``after`` seconds later."""
    front.kill()

    def restart() -> None:
        time.sleep(after)
        stack.front(port=front.port)

    thread = threading.Thread(target=restart)
    thread.start()
    return thread


def test_ask_yields_the_answer_pieces_and_its_outcome(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    cid = new_cid()
    with BrokerClient(stack.fronts[0].url) as client:
        answer = client.ask(
            cid, "hello", params={"tokens": 25, "interval_ms": 5, "reasoning_tokens": 4}
        )
        pieces = list(answer)
        snapshot = client.snapshot(cid)
    assert isinstance(answer.outcome, RunCompleted)
    assert "".join(pieces) == answer.text == snapshot.messages[1].content
    assert len(answer.text.split()) == 25
    assert answer.reasoning == snapshot.messages[1].reasoning and len(answer.reasoning.split()) == 4


def test_stream_and_resume_yield_exactly_the_stored_events(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1)
    cid = new_cid()
    with BrokerClient(stack.fronts[0].url) as client:
        run = client.send(cid, "count", params={"tokens": 30, "interval_ms": 5})
        first: list[tuple[str | None, Any]] = []
        with client.stream(cid) as stream:
            for item in stream:
                first.append((stream.last_event_id, item))
                if len(first) == 8:
                    break
        held = stream.last_event_id
        rest: list[tuple[str | None, Any]] = []
        with client.stream(cid, after=held) as stream:
            for item in stream:
                rest.append((stream.last_event_id, item))
                if type(item) in TERMINAL_EVENTS and item.run_id == run.run_id:
                    break
    assert isinstance(first[0][1], UserMessage)
    assert _received(first) + _received(rest) == _stored(redis_client, prefix, cid)


def test_the_client_resumes_across_a_killed_front(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """The front dies mid-answer and comes back on its address: iteration simply goes on."""
    stack.start(fronts=1, workers=1)
    front = stack.fronts[0]
    cid = new_cid()
    received: list[tuple[str | None, Any]] = []
    restarter = None
    with BrokerClient(front.url, max_attempts=40, max_backoff=0.5) as client:
        run = client.send(cid, "a long one", params={"tokens": 150, "interval_ms": 20})
        with client.stream_run(cid, run.run_id) as stream:
            for item in stream:
                received.append((stream.last_event_id, item))
                if len(received) == 10:
                    restarter = _restart_later(stack, front, after=1.0)
    assert restarter is not None
    restarter.join()
    stored = _stored(redis_client, prefix, cid)
    assert _received(received) == stored
    assert isinstance(received[-1][1], RunCompleted)
    assert len("".join(i.text for _, i in received if isinstance(i, Delta)).split()) == 150


@pytest.mark.anyio
async def test_the_async_client_resumes_across_a_killed_front(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1)
    front = stack.fronts[0]
    cid = new_cid()
    received: list[tuple[str | None, Any]] = []
    async with AsyncBrokerClient(front.url, max_attempts=40, max_backoff=0.5) as client:
        run = await client.send(cid, "a long one", params={"tokens": 120, "interval_ms": 20})
        async with client.stream(cid) as stream:
            async for item in stream:
                received.append((stream.last_event_id, item))
                if len(received) == 10:
                    restarter = await anyio.to_thread.run_sync(_restart_later, stack, front, 1.0)
                if type(item) in TERMINAL_EVENTS and item.run_id == run.run_id:
                    break
    await anyio.to_thread.run_sync(restarter.join)
    assert _received(received) == _stored(redis_client, prefix, cid)


def test_gives_up_after_the_allowed_attempts(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    front = stack.fronts[0]
    cid = new_cid()
    with BrokerClient(front.url, max_attempts=3, max_backoff=0.2) as client:
        client.send(cid, "a long one", params={"tokens": 400, "interval_ms": 20})
        stream = client.stream(cid)
        seen = [next(stream) for _ in range(5)]
        held = stream.last_event_id
        front.kill()
        started = time.monotonic()
        with pytest.raises(ReconnectFailed) as caught:
            for _ in stream:
                pass
    assert len(seen) == 5
    assert caught.value.attempts == 3 and caught.value.last_event_id == held
    assert time.monotonic() - started < 10


def test_a_reset_reaches_the_caller_before_the_replay(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    cid = new_cid()
    with BrokerClient(stack.fronts[0].url) as client:
        run = client.send(cid, "hi", params={"tokens": 3, "interval_ms": 1})
        with client.stream(cid, after="1-0") as stream:  # no position of this conversation
            first, second = next(stream), next(stream)
    assert isinstance(first, Reset) and first.reason == "unknown_position"
    assert isinstance(second, UserMessage) and second.run_id == run.run_id


def test_errors_are_typed_and_carry_the_code(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    cid = new_cid()
    with BrokerClient(stack.fronts[0].url) as client:
        with pytest.raises(NotFound) as not_found:
            client.snapshot(cid)
        with pytest.raises(BadRequest) as bad_model:
            client.send(cid, "hi", model="no-such-model")
        client.send(cid, "hi", params={"tokens": 500, "interval_ms": 20})
        with pytest.raises(Conflict) as active:
            client.send(cid, "again")
        assert client.cancel(cid, wait=True).status == "cancelled"
        with pytest.raises(Conflict) as idle:
            client.cancel(cid)
        assert list(client.stream_run(cid)) == []  # nothing active: nothing to yield
    assert not_found.value.code == "conversation_not_found" and not_found.value.status == 404
    assert bad_model.value.code == "unknown_model" and bad_model.value.status == 422
    assert active.value.code == "run_active" and idle.value.code == "no_active_run"
    with BrokerClient(f"http://127.0.0.1:{free_port()}") as nobody:
        with pytest.raises(BrokerUnavailable) as down:
            nobody.snapshot(cid)
    assert "no broker answers" in str(down.value)


def test_backoff_grows_with_jitter_and_honours_retry() -> None:
    backoff = Backoff(max_attempts=4, max_delay=3.0, retry_ms=1000)
    assert backoff.after_end() == 1.0
    delays = [backoff.after_failure("x", "1-0") for _ in range(4)]
    for delay, ceiling in zip(delays, [1.0, 2.0, 3.0, 3.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    with pytest.raises(ReconnectFailed):
        backoff.after_failure("x", "1-0")
    backoff.connected()
    assert backoff.after_failure("x", None, retry_after=7.0) == 7.0
    backoff.retry = 0.05  # a draining front's `retry: 50`
    assert backoff.after_end() == 0.05


def test_an_event_newer_than_the_client_is_passed_on_not_dropped() -> None:
    tracker = StreamTracker(None)
    item = tracker.accept(ServerSentEvent("future.thing", '{"run_id":"r"}', "3-0"))
    assert item == UnknownEvent("future.thing", '{"run_id":"r"}')
    assert tracker.last_event_id == "3-0"


def test_a_run_stream_resumed_after_its_end_ends_at_once(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    cid = new_cid()
    with BrokerClient(stack.fronts[0].url) as client:
        answer = client.ask(cid, "hi", params={"tokens": 3, "interval_ms": 1})
        list(answer)
        end = client.snapshot(cid).last_event_id
        started = time.monotonic()
        assert list(client.stream_run(cid, answer.run_id, after=end)) == []
        assert time.monotonic() - started < 5
