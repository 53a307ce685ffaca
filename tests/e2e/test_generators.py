"""The application's own generation code, run by real workers from ``BROKER_GENERATORS``.

The example agent in ``examples/agent.py`` runs end to end: reasoning, a tool call streamed in
pieces, its result, a data part, then text forwarded from a catalogue model, all as events a
client reads and the snapshot merges. A generator gets what a built-in model gets: a worker
killed mid-run ends the run once (``worker_lost``), a cancel interrupts it at its next await
(its ``finally`` runs), and an exception ends the run with a clear code that carries none of
the exception's text.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis

from tests.api import error_code
from tests.app_generators import SECRET
from tests.helpers import new_cid, nth_delta, terminal_of
from tests.stack import Process, Stack
from tests.stored import answer_text, assert_no_duplicates, of_run, stored_events, terminals

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

AGENTS = ",".join(
    [
        "weather=examples.agent:weather_agent",
        "echo=tests.app_generators:echo",
        "raises=tests.app_generators:raises",
        "refuses=tests.app_generators:refuses",
        "busy=tests.app_generators:busy",
    ]
)
LEASE = {"lease_seconds": 1.5, "reap_interval_seconds": 0.3}


async def _wait_for_output(process: Process, text: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.output():
        assert time.monotonic() < deadline, f"{process.name} never said {text!r}"
        await asyncio.sleep(0.05)


async def test_the_example_agent_streams_reasoning_a_tool_call_its_result_data_and_text(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    # No coalescing: every piece of the streamed tool call is its own event.
    stack.start(generators=AGENTS, coalesce_ms=0)
    front = stack.fronts[0]
    cid = new_cid("agent")
    run = await front.api.start_run(cid, "Weather in Paris?", model="weather")
    run_id = run["run_id"]
    async with await front.api.run_stream(cid, run_id) as client:
        events = await client.read_to_end(timeout=30)
    assert events == of_run(stored_events(redis_client, prefix, cid), run_id)

    names = [e.event for e in events]
    assert names[:3] == ["message", "run.started", "delta"]
    assert names[-1] == "run.completed"
    assert events[1].json()["model"] == "weather"
    reasoning = answer_text(events, run_id, "reasoning")
    assert reasoning.startswith("The user asks about the weather in Paris")

    calls = [e.json() for e in events if e.event == "tool.call"]
    pieces, whole = calls[:-1], calls[-1]
    assert len(pieces) >= 2, "the arguments stream in pieces"
    call_id = whole["call_id"]
    assert {(c["call_id"], c["name"]) for c in calls} == {(call_id, "get_weather")}
    assert "".join(p["arguments_delta"] for p in pieces) == '{"city": "Paris"}'
    assert whole == {
        "run_id": run_id,
        "call_id": call_id,
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    weather = {"city": "Paris", "temp_c": 21, "sky": "sunny"}
    [result] = [e.json() for e in events if e.event == "tool.result"]
    assert result == {"run_id": run_id, "call_id": call_id, "result": weather, "is_error": False}
    [data] = [e.json() for e in events if e.event == "data"]
    assert data == {"run_id": run_id, "name": "weather_card", "value": weather}
    # Everything in the order the generator emitted it.
    order = [n for n in names if n in ("tool.call", "tool.result", "data")]
    assert order == ["tool.call"] * len(calls) + ["tool.result", "data"]
    assert names.index("data") < next(
        i for i, e in enumerate(events) if e.event == "delta" and e.json()["channel"] == "content"
    )

    content = answer_text(events, run_id)
    assert content.startswith("In Paris it is 21 °C and sunny. ")
    assert len(content.split()) == len("In Paris it is 21 °C and sunny.".split()) + 12
    completed = events[-1].json()
    assert completed["finish_reason"] == "stop" and completed["usage"]["output_tokens"] == 12

    snapshot = (await front.api.snapshot(cid)).json()
    assistant = snapshot["messages"][1]
    assert assistant["status"] == "completed"
    assert assistant["content"] == content
    assert assistant["parts"] == [
        {"type": "reasoning", "text": answer_text(events, run_id, "reasoning")},
        {
            "type": "tool_call",
            "call_id": call_id,
            "name": "get_weather",
            "arguments": {"city": "Paris"},
        },
        {"type": "tool_result", "call_id": call_id, "result": weather, "is_error": False},
        {"type": "data", "name": "weather_card", "value": weather},
        {"type": "text", "text": content},
    ]


async def test_a_tool_that_fails_is_reported_as_an_error_result(stack: Stack) -> None:
    stack.start(generators=AGENTS)
    front = stack.fronts[0]
    cid = new_cid("agent")
    run_id = (await front.api.start_run(cid, "Weather in Atlantis?", model="weather"))["run_id"]
    async with await front.api.run_stream(cid, run_id) as client:
        events = await client.read_to_end(timeout=30)
    [result] = [e.json() for e in events if e.event == "tool.result"]
    assert (result["result"], result["is_error"]) == ("no forecast for Atlantis", True)
    assert answer_text(events, run_id) == "Sorry, I have no forecast for Atlantis."
    assert events[-1].event == "run.completed"


async def test_a_generator_gets_the_prompt_history_params_and_ids(stack: Stack) -> None:
    stack.start(generators=AGENTS)
    front = stack.fronts[0]
    cid = new_cid("echo")
    # The earlier turn has tool calls, results and data: the context keeps its answer text.
    first = (await front.api.start_run(cid, "Weather in Paris?", model="weather"))["run_id"]
    await front.api.wait_run_finished(cid, first)
    response = await front.api.post_message(
        cid, "second question", model="echo", anything={"the": ["app", "decides"]}
    )
    assert response.status_code == 202, response.text
    second = response.json()["run_id"]
    async with await front.api.run_stream(cid, second) as client:
        events = await client.read_to_end(timeout=30)

    seen = json.loads(answer_text(events, second))
    first_answer = (await front.api.snapshot(cid)).json()["messages"][1]["content"]
    assert first_answer.startswith("In Paris it is 21 °C")
    assert seen == {
        "prompt": "second question",
        "history": [["user", "Weather in Paris?"], ["assistant", first_answer]],
        "params": {"anything": {"the": ["app", "decides"]}},
        "conversation_id": cid,
        "run_id": second,
        "models": ["simulated"],
    }
    assert events[-1].json() == {
        "run_id": second,
        "finish_reason": "echoed",
        "usage": {"input_tokens": len("second question"), "output_tokens": 1},
    }


async def test_a_generator_that_raises_fails_the_run_without_its_message(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    # The worker logs the generator's exception with its traceback, for the operator.
    stack.expect_traceback(r"RuntimeError: could not connect with")
    stack.start(generators=AGENTS)
    front = stack.fronts[0]
    cid = new_cid("raises")
    failures: list[dict[str, Any]] = []
    for model in ("raises", "refuses"):
        run_id = (await front.api.start_run(cid, "go", model=model))["run_id"]
        async with await front.api.run_stream(cid, run_id) as client:
            events = await client.read_to_end(timeout=30)
        assert [e.event for e in events if e.is_terminal] == ["run.failed"]
        failures.append(events[-1].json()["error"])

    assert failures == [
        {"code": "generator_error", "message": "the generator raised RuntimeError"},
        # A GeneratorFailure is the application's own choice of what to show.
        {"code": "quota_exceeded", "message": "You have used up today's questions."},
    ]
    stored = stored_events(redis_client, prefix, cid)
    assert not any(SECRET in e.data for e in stored)
    # The partial answer stays, like any failed run's.
    snapshot = (await front.api.snapshot(cid)).json()
    assert snapshot["messages"][1]["content"] == "partial "
    # The worker's log has the whole story for the operator.
    assert "RuntimeError" in stack.workers[0].output()


async def test_a_worker_killed_mid_run_ends_the_agent_s_run_once_with_worker_lost(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=0, generators=AGENTS, **LEASE)
    doomed = stack.worker()
    front = stack.fronts[0]
    cid = new_cid("killed")
    run_id = (
        await front.api.start_run(
            cid,
            "Weather in Tokyo?",
            model="weather",
            model_params={"tokens": 5000, "interval_ms": 5},
        )
    )["run_id"]
    watcher = await front.api.stream(cid)
    await watcher.read_until(lambda e: e.event == "data")
    await watcher.read_until(nth_delta(3))
    doomed.kill()
    stack.worker()

    async with watcher:
        events = await watcher.read_until(terminal_of(run_id), timeout=30)
    [ended] = terminals(events, run_id)
    assert ended.event == "run.failed" and ended.json()["error"]["code"] == "worker_lost"

    await asyncio.sleep(3 * LEASE["lease_seconds"])
    stored = of_run(stored_events(redis_client, prefix, cid), run_id)
    assert [e.event for e in stored if e.is_terminal] == ["run.failed"]
    assert stored[-1].is_terminal
    # The run is not started again: one run.started, one tool call, and the answer so far.
    assert [e.event for e in stored].count("run.started") == 1
    assert [e.event for e in stored].count("tool.result") == 1
    assert_no_duplicates(watcher.events)
    snapshot = (await front.api.snapshot(cid)).json()
    assert snapshot["messages"][1]["status"] == "failed"
    assert snapshot["messages"][1]["content"].startswith("In Tokyo it is 26 °C")


async def test_cancel_during_a_tool_call_interrupts_it_and_its_finally_runs(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(generators=AGENTS)
    front = stack.fronts[0]
    cid = new_cid("cancel")
    run_id = (
        await front.api.start_run(cid, "Weather in London?", model="weather", tool_seconds=60)
    )["run_id"]
    async with await front.api.run_stream(cid, run_id) as client:
        await client.read_until(lambda e: e.event == "tool.call" and "arguments" in e.json())
        started = time.monotonic()
        response = await front.api.cancel(cid, wait=True)
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        assert time.monotonic() - started < 10, "the tool's 60 s wait was not interrupted"
        rest = await client.read_to_end(timeout=30)

    assert [e.event for e in rest] == ["run.cancelled"]
    await _wait_for_output(stack.workers[0], "get_weather('London') stopped before it finished")
    stored = of_run(stored_events(redis_client, prefix, cid), run_id)
    assert "tool.result" not in [e.event for e in stored]
    assert stored[-1].event == "run.cancelled"


async def test_a_generator_that_never_awaits_anything_else_still_stops_on_cancel(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """Its emits let the worker's other tasks run once per coalescing window: other runs on
    the same worker go on, and the cancel reaches it."""
    stack.start(generators=AGENTS)
    front = stack.fronts[0]
    busy_cid, other_cid = new_cid("busy"), new_cid("other")
    busy = (await front.api.start_run(busy_cid, "spin", model="busy"))["run_id"]
    async with await front.api.run_stream(busy_cid, busy) as client:
        await client.read_until(nth_delta(3))
        other = (await front.api.start_run(other_cid, "meanwhile", tokens=20, interval_ms=5))[
            "run_id"
        ]
        await front.api.wait_run_finished(other_cid, other, timeout=20)
        response = await front.api.cancel(busy_cid, wait=True)
        assert response.json()["status"] == "cancelled", response.text
        events = await client.read_to_end(timeout=30)
    assert events[-1].event == "run.cancelled"
    other_events = stored_events(redis_client, prefix, other_cid)
    assert terminals(other_events, other)[0].event == "run.completed"
    assert len(answer_text(other_events, other).split()) == 20


async def test_fronts_accept_generator_names_without_importing_them(stack: Stack) -> None:
    """The front knows the names only; the worker, which runs them, refuses a bad one."""
    stack.start(fronts=1, workers=0, generators="ghost=nowhere.at_all:agent")
    front = stack.fronts[0]
    cid = new_cid("ghost")
    accepted = await front.api.post_message(cid, "hello", model="ghost", any={"params": 1})
    assert accepted.status_code == 202, accepted.text
    refused = await front.api.post_message(new_cid(), "hello", model="phantom")
    assert refused.status_code == 422 and error_code(refused) == "unknown_model"

    worker = stack.worker()
    assert await asyncio.to_thread(worker.popen.wait, 30) != 0
    assert "BROKER_GENERATORS" in worker.output() and "nowhere.at_all" in worker.output()


async def test_a_malformed_generators_setting_stops_fronts_and_workers(stack: Stack) -> None:
    stack.start(fronts=0, workers=0, generators="support=no-colon-here")
    for process in (stack.worker(), stack.front(wait=False)):
        assert await asyncio.to_thread(process.popen.wait, 30) != 0
        assert "BROKER_GENERATORS" in process.output(), process.output()


async def test_ten_thousand_emits_in_a_tight_loop_cost_a_handful_of_writes(
    redis_url: str, prefix: str
) -> None:
    """An emit gathers its output in the generator's own task; appends happen per window."""
    import redis.asyncio

    from broker.core.events import RunStarted, UserMessage, encode
    from broker.core.jobs import Job
    from broker.core.settings import Settings
    from broker.engine import Engine
    from broker.engine.conversations import Started
    from workers.generators import ApplicationGenerator
    from workers.providers.base import Finish, GenerationRequest
    from workers.relay import Generation
    from workers.run import Run

    settings = Settings(redis_url=redis_url, key_prefix=prefix)
    client = redis.asyncio.Redis.from_url(redis_url)
    store = Engine(settings, "test", client=client).conversations
    cid = new_cid("tight")
    job = Job(
        conversation_id=cid,
        run_id="r1",
        message_id="m1",
        assistant_message_id="m2",
        model="tight",
        content="go",
    )
    _, message = encode(UserMessage("m1", "go", "r1"))
    _, started = encode(RunStarted("r1", "m2", "tight"))
    try:
        await store.accept(
            cid,
            run_id="r1",
            message_id="m1",
            assistant_message_id="m2",
            model="tight",
            data=message,
            idempotency_key=None,
            idempotency_record="",
        )
        start = await store.start_run(cid, "r1", "test-worker", "job-1", started)
        assert isinstance(start, Started)

        async def tight(run: Run) -> None:
            for index in range(10_000):
                await run.text(f"{index} ")

        generator = ApplicationGenerator("tight", tight, {}, {})
        generation = Generation(store, job, start.fence, coalesce_seconds=0.015)
        outcome = await generation.run(
            lambda g: generator.produce(g, GenerationRequest("tight", "go"), cid=cid, run_id="r1")
        )
        assert outcome == Finish("stop", None)
        stored = await client.xrange(f"{prefix}:{{{cid}}}:events")
        # The engine set this client to hand stream replies over as sent: [t, name, d, data, r, run].
        text = "".join(
            json.loads(fields[3])["text"] for _, fields in stored if fields[1] == b"delta"
        )
        assert text == "".join(f"{index} " for index in range(10_000))
        # One write per 15 ms window of the loop's run time, not one per emit.
        assert generation.appends <= 40, generation.appends
    finally:
        await client.aclose()
