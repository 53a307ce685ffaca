"""The scenarios every framework integration passes, end to end, against real broker processes.

Each framework's test module (``tests/e2e/test_integrations_*.py``) runs them with its agent
from ``tests.app_agents`` and says what its framework's stream looks like: the order of the
events, the snapshot's parts, and how its framework reports a tool that raises.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from tests.app_agents import CALL_ID, REASONING, SECRET
from tests.helpers import new_cid
from tests.sse import Event
from tests.stack import Process, Stack
from tests.stored import (
    answer_text,
    assert_in_order,
    assert_no_duplicates,
    of_run,
    stored_events,
    terminals,
)

WEATHER = {"city": "Paris", "sky": "sunny", "celsius": 21}
TOOL_CALL = {"type": "tool_call", "call_id": CALL_ID, "name": "get_weather"}


@dataclass(frozen=True)
class Framework:
    """One integration under test: its generator and what its stream looks like."""

    name: str  # the log lines' prefix, as tests.app_agents writes them
    generator: str  # module:function
    # The run's events, consecutive events of one kind folded into one (see ``kinds``).
    order: list[str]
    # The snapshot's parts before the answer's text part.
    parts: list[dict[str, Any]]
    # A tool that raises: the error result the client sees, and how the run ends.
    raised_result: str
    raised_end: tuple[str, str | None]  # (terminal event, error code)
    # The message of the run that reaches the framework's own limit (turns, recursion, usage).
    limit_message: str
    # The agent's own traceback the worker logs when a run fails, by its failure.
    expected_tracebacks: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return "agent"

    def start(self, stack: Stack, **settings: Any) -> None:
        for pattern in self.expected_tracebacks:
            stack.expect_traceback(pattern)
        stack.start(generators=f"{self.model}={self.generator}", **settings)


def kinds(events: list[Event]) -> list[str]:
    """The events as kinds (``delta:reasoning``, ``tool.call``, ``data:node``...), each run of
    one kind folded into one, so the order does not depend on how the relay coalesced."""
    folded: list[str] = []
    for event in events:
        data = event.json()
        kind = event.event
        if kind == "delta":
            kind += ":" + data["channel"]
        elif kind == "data":
            kind += ":" + data["name"]
        if not folded or folded[-1] != kind:
            folded.append(kind)
    return folded


def answer(words: int) -> str:
    return "In Paris it is sunny. " + "".join(f"word{i} " for i in range(words))


async def _wait_for_output(process: Process, text: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.output():
        assert time.monotonic() < deadline, f"{process.name} never said {text!r}"
        await asyncio.sleep(0.05)


async def events_and_parts(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """The stream carries the framework's run in order; the snapshot's parts show it whole."""
    framework.start(stack, coalesce_ms=0)
    front = stack.fronts[0]
    cid = new_cid(framework.name)
    run_id = (await front.api.start_run(cid, "Weather in Paris?", model=framework.model, words=5))[
        "run_id"
    ]
    async with await front.api.run_stream(cid, run_id) as client:
        events = await client.read_to_end(timeout=30)
    assert events == of_run(stored_events(redis_client, prefix, cid), run_id)
    assert kinds(events) == ["message", "run.started", *framework.order, "run.completed"]

    assert answer_text(events, run_id, "reasoning") == REASONING
    calls = [e.json() for e in events if e.event == "tool.call" and e.json()["call_id"] == CALL_ID]
    pieces, whole = calls[:-1], calls[-1]
    assert pieces, "the arguments stream in pieces first"
    assert "".join(p["arguments_delta"] for p in pieces).replace(" ", "") == '{"city":"Paris"}'
    assert whole == {
        "run_id": run_id,
        "call_id": CALL_ID,
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    results = [e.json() for e in events if e.event == "tool.result"]
    assert results[0] == {
        "run_id": run_id,
        "call_id": CALL_ID,
        "result": WEATHER,
        "is_error": False,
    }
    assert answer_text(events, run_id) == answer(5)
    completed = events[-1].json()
    assert completed["finish_reason"] == "stop"
    assert completed["usage"]["input_tokens"] > 0 and completed["usage"]["output_tokens"] > 0

    message = (await front.api.snapshot(cid)).json()["messages"][1]
    assert message["status"] == "completed"
    assert message["parts"] == [*framework.parts, {"type": "text", "text": answer(5)}]


async def resume_from_another_front(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """A client that read half the answer from one front resumes it from another: the rest,
    once each, with nothing lost."""
    framework.start(stack, fronts=2)
    first, second = stack.fronts
    cid = new_cid(framework.name)
    run_id = (
        await first.api.start_run(
            cid, "Weather in Paris?", model=framework.model, words=60, word_seconds=0.03
        )
    )["run_id"]
    async with await first.api.run_stream(cid, run_id) as client:
        before = await client.read_until(
            lambda e: e.event == "delta" and e.json()["channel"] == "content"
        )
    assert "tool.result" in [e.event for e in before]
    async with await second.api.run_stream(cid, run_id, last_event_id=before[-1].id) as client:
        after = await client.read_to_end(timeout=30)
    assert after and after[-1].event == "run.completed"
    seen = before + after
    assert_no_duplicates(seen)
    assert_in_order(seen)
    assert seen == of_run(stored_events(redis_client, prefix, cid), run_id)
    assert answer_text(seen, run_id) == answer(60)


async def cancel_during_the_tool(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """A cancel while the tool runs stops it at once; no later model call or tool starts."""
    framework.start(stack)
    front = stack.fronts[0]
    cid = new_cid(framework.name)
    run_id = (
        await front.api.start_run(cid, "Weather in Paris?", model=framework.model, tool_seconds=60)
    )["run_id"]
    worker = stack.workers[0]
    async with await front.api.run_stream(cid, run_id) as client:
        await client.read_until(lambda e: e.event == "tool.call" and "arguments" in e.json())
        await _wait_for_output(worker, f"{framework.name} get_weather(Paris) started")
        started = time.monotonic()
        response = await front.api.cancel(cid, wait=True)
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        assert time.monotonic() - started < 10, "the tool's 60 s were not interrupted"
        rest = await client.read_to_end(timeout=30)
    # What was on its way when the cancel came (the call's last piece, a node's start), then
    # the end: no result, no answer.
    assert rest[-1].event == "run.cancelled"
    assert {e.event for e in rest[:-1]} <= {"tool.call", "data"}
    await _wait_for_output(worker, f"{framework.name} get_weather stopped before it finished")
    await asyncio.sleep(1)  # whatever would come after the cancel has had time to
    stored = of_run(stored_events(redis_client, prefix, cid), run_id)
    assert stored[-1].event == "run.cancelled"
    assert not [e for e in stored if e.event == "tool.result" and e.json()["call_id"] == CALL_ID]
    assert worker.output().count(f"{framework.name} get_weather(") == 1
    assert f"{framework.name} model call 2" not in worker.output()
    assert f"{framework.name} model call 3" not in worker.output()


async def cancel_during_the_text(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """A cancel mid-answer closes the model's stream; nothing is written after the cancel."""
    framework.start(stack)
    front = stack.fronts[0]
    cid = new_cid(framework.name)
    run_id = (
        await front.api.start_run(
            cid, "Weather in Paris?", model=framework.model, words=2000, word_seconds=0.02
        )
    )["run_id"]
    async with await front.api.run_stream(cid, run_id) as client:
        await client.read_until(lambda e: e.event == "delta" and e.json()["channel"] == "content")
        response = await front.api.cancel(cid, wait=True)
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        rest = await client.read_to_end(timeout=30)
    assert rest[-1].event == "run.cancelled"
    await _wait_for_output(stack.workers[0], f"{framework.name} model stream closed before its end")
    stored = of_run(stored_events(redis_client, prefix, cid), run_id)
    await asyncio.sleep(1)
    assert of_run(stored_events(redis_client, prefix, cid), run_id) == stored
    assert stored[-1].event == "run.cancelled"
    assert [e.event for e in stored if e.is_terminal] == ["run.cancelled"]
    words = answer_text(stored, run_id).split()
    assert 0 < len(words) < 500, "the partial answer stays, and it is partial"


async def a_tool_that_raises(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """The tool's error is its call's error result; its text (a secret) is nowhere."""
    framework.start(stack)
    front = stack.fronts[0]
    cid = new_cid(framework.name)
    run_id = (
        await front.api.start_run(cid, "Weather in Paris?", model=framework.model, fail="tool")
    )["run_id"]
    async with await front.api.run_stream(cid, run_id) as client:
        events = await client.read_to_end(timeout=30)
    results = [e.json() for e in events if e.event == "tool.result"]
    assert results[0] == {
        "run_id": run_id,
        "call_id": CALL_ID,
        "result": framework.raised_result,
        "is_error": True,
    }
    end, code = framework.raised_end
    assert events[-1].event == end
    if code is not None:
        assert events[-1].json()["error"]["code"] == code
    assert not any(SECRET in e.data for e in stored_events(redis_client, prefix, cid))
    snapshot = (await front.api.snapshot(cid)).json()
    [tool_result] = [
        p
        for p in snapshot["messages"][1]["parts"]
        if p["type"] == "tool_result" and p["call_id"] == CALL_ID
    ]
    assert tool_result["is_error"] is True


async def a_framework_error(framework: Framework, stack: Stack) -> None:
    """The framework's own limit ends the run ``run.failed`` with a stable code."""
    framework.start(stack)
    front = stack.fronts[0]
    cid = new_cid(framework.name)
    run_id = (
        await front.api.start_run(cid, "Weather in Paris?", model=framework.model, fail="framework")
    )["run_id"]
    async with await front.api.run_stream(cid, run_id) as client:
        events = await client.read_to_end(timeout=30)
    [ended] = terminals(events, run_id)
    assert ended.event == "run.failed"
    assert ended.json()["error"] == {
        "code": "limit_exceeded",
        "message": framework.limit_message,
    }
    assert WEATHER in [e.json()["result"] for e in events if e.event == "tool.result"]
    snapshot = (await front.api.snapshot(cid)).json()
    assert snapshot["messages"][1]["status"] == "failed"
