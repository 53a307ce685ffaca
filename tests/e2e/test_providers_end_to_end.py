"""Real model providers through real broker processes, against fake upstreams on loopback.

The catalogue points the worker at the fake: once through the two OpenAI-compatible variables,
once through a TOML file. Clients see the upstream's answer and reasoning as ordinary delta
events; a cancel closes the upstream connection; an upstream failure ends the run with a clear
code; and the API key shows up nowhere (events, messages, process output).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.api import error_code
from tests.helpers import new_cid, terminal_of
from tests.stack import Stack
from tests.stored import answer_text, stored_events
from tests.upstreams import streams
from tests.upstreams.server import FakeUpstream, json_reply, sse_reply

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

KEY = "sk-e2e-0a1b2c3d4e5f60718293"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def _models_file(tmp_path: Path, fake: FakeUpstream, kind: str, name: str, key_var: str) -> str:
    path = tmp_path / "models.toml"
    root = {"anthropic": "", "openai_responses": "/v1"}[kind]
    path.write_text(
        f'[models."{name}"]\nprovider = "{kind}"\nmodel = "upstream-{name}"\n'
        f'base_url = "{fake.url}{root}"\napi_key_env = "{key_var}"\n'
    )
    return str(path)


async def test_openai_compatible_endpoint_from_two_variables(
    stack: Stack, fake: FakeUpstream, redis_client: redis.Redis, prefix: str
) -> None:
    fake.reply(sse_reply(streams.OPENAI_CHAT, piece=40), sse_reply(streams.OPENAI_CHAT, piece=40))
    stack.start(openai_base_url=fake.url + "/v1", openai_models="gpt-test", openai_api_key=KEY)
    front = stack.fronts[0]
    cid = new_cid()

    refused = await front.api.post_message(cid, "hi", model="gpt-unknown")
    assert refused.status_code == 422 and error_code(refused) == "unknown_model"
    refused = await front.api.post_message(cid, "hi", model="gpt-test", tokens=3)
    assert refused.status_code == 422 and error_code(refused) == "invalid_field"

    first = (await front.api.start_run(cid, "Greet me.", model="gpt-test"))["run_id"]
    async with await front.api.stream(cid) as client:
        events = await client.read_until(terminal_of(first), timeout=30)
        second = (await front.api.start_run(cid, "And again?", model="gpt-test", temperature=0.2))[
            "run_id"
        ]
        events += await client.read_until(terminal_of(second), timeout=30)

    assert events == stored_events(redis_client, prefix, cid)
    for run_id in (first, second):
        assert answer_text(events, run_id) == streams.ANSWER
        assert answer_text(events, run_id, "reasoning") == streams.REASONING
        [started] = [e for e in events if e.event == "run.started" and e.run_id == run_id]
        assert started.json()["model"] == "gpt-test"
        [completed] = [e for e in events if e.event == "run.completed" and e.run_id == run_id]
        assert completed.json() == {
            "run_id": run_id,
            "finish_reason": "stop",
            "usage": {"input_tokens": 12, "output_tokens": 9, "reasoning_tokens": 5},
        }

    one, two = fake.requests
    assert one.path == "/v1/chat/completions"
    assert one.headers["authorization"] == f"Bearer {KEY}"
    assert one.json()["model"] == "gpt-test"
    assert one.json()["messages"] == [{"role": "user", "content": "Greet me."}]
    # The second prompt goes with the first turn as context (the answer, not its reasoning).
    assert two.json()["messages"] == [
        {"role": "user", "content": "Greet me."},
        {"role": "assistant", "content": streams.ANSWER},
        {"role": "user", "content": "And again?"},
    ]
    assert two.json()["temperature"] == 0.2


async def test_cancel_closes_the_upstream_connection(
    stack: Stack, fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", KEY)
    # The answer starts, then the upstream keeps the connection open as a slow model would.
    fake.reply(sse_reply(streams.ANTHROPIC_CUT, end="hold"))
    stack.start(
        models_file=_models_file(tmp_path, fake, "anthropic", "claude-test", "FAKE_ANTHROPIC_KEY")
    )
    front = stack.fronts[0]
    cid = new_cid()
    run_id = (await front.api.start_run(cid, "Greet me.", model="claude-test"))["run_id"]

    async with await front.api.stream(cid) as client:
        before = await client.read_until(
            lambda e: e.event == "delta" and e.json()["channel"] == "content", timeout=30
        )
        assert not fake.requests[0].disconnected.is_set()
        response = await front.api.cancel(cid)
        assert response.status_code in (200, 202), response.text
        assert await asyncio.to_thread(fake.wait_disconnect, 0, 15.0), (
            "the upstream call stayed open"
        )
        after = await client.read_until(terminal_of(run_id), timeout=30)

    assert after[-1].event == "run.cancelled"
    assert answer_text(before + after, run_id, "reasoning") == streams.REASONING
    assert answer_text(before + after, run_id).startswith("Hello")
    assert fake.requests[0].headers["x-api-key"] == KEY
    assert fake.requests[0].json()["model"] == "upstream-claude-test"


async def test_upstream_failures_end_the_run_without_leaking_the_key(
    stack: Stack,
    fake: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", KEY)
    echoed = {"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}
    fake.reply(
        json_reply(401, echoed),
        json_reply(500, echoed),
        json_reply(429, {"error": {"message": f"Slow down, {KEY}"}}, {"retry-after": "17"}),
    )
    stack.start(
        models_file=_models_file(
            tmp_path, fake, "openai_responses", "resp-test", "FAKE_OPENAI_KEY"
        ),
        log_level="DEBUG",
    )
    front = stack.fronts[0]
    cid = new_cid()
    failures = []
    for _ in range(3):
        run_id = (await front.api.start_run(cid, "Greet me.", model="resp-test"))["run_id"]
        async with await front.api.run_stream(cid, run_id) as client:
            events = await client.read_to_end(timeout=30)
        assert events[-1].event == "run.failed", events[-1]
        failures.append(events[-1].json()["error"])

    assert [f["code"] for f in failures] == ["auth_failed", "upstream_error", "rate_limited"]
    assert "retry after 17 s" in failures[2]["message"]
    assert fake.requests[0].path == "/v1/responses"
    for event in stored_events(redis_client, prefix, cid):
        assert KEY not in event.data
    for process in stack.processes:
        assert KEY not in process.output(), process.name


async def test_an_unreadable_catalogue_stops_workers_and_fronts_with_a_clear_message(
    stack: Stack, tmp_path: Path
) -> None:
    broken = tmp_path / "models.toml"
    broken.write_text('[models.x]\nprovider = "ollama"\napi_key = "never here"\n')
    stack.start(fronts=0, workers=0, models_file=str(broken))
    for process in (stack.worker(), stack.front(wait=False)):
        assert await asyncio.to_thread(process.popen.wait, 30) != 0
        assert "model catalogue" in process.output() and "api_key" in process.output()


WEATHER_TOOL = {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.mark.parametrize("via", ["model", "generator"])
async def test_tool_calls_of_a_model_reach_clients_as_tool_call_events(
    stack: Stack, fake: FakeUpstream, redis_client: redis.Redis, prefix: str, via: str
) -> None:
    """Straight from a model asked with tools, or forwarded by a generator that called it."""
    fake.reply(sse_reply(streams.OPENAI_CHAT_TOOLS, piece=40))
    stack.start(
        openai_base_url=fake.url + "/v1",
        openai_models="gpt-test",
        generators="forwarder=tests.app_generators:model_with_tools",
        coalesce_ms=0,
    )
    front = stack.fronts[0]
    cid = new_cid()
    if via == "model":
        body = {"model": "gpt-test", "params": {"tools": [WEATHER_TOOL]}}
    else:
        body = {"model": "forwarder", "params": {"model": "gpt-test", "tools": [WEATHER_TOOL]}}
    response = await front.api.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "Weather in Paris?", **body}
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    async with await front.api.run_stream(cid, run_id) as client:
        events = await client.read_to_end(timeout=30)
    assert events == [e for e in stored_events(redis_client, prefix, cid) if e.run_id == run_id]

    calls = [e.json() for e in events if e.event == "tool.call"]
    weather = [c for c in calls if c["name"] == "get_weather"]
    assert "".join(c.get("arguments_delta", "") for c in weather) == streams.TOOL_ARGUMENTS
    assert weather[-1] == {
        "run_id": run_id,
        "call_id": "call_Vx8mQ2",
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert calls[-1]["name"] == "get_time" and calls[-1]["arguments"] == {}
    assert events[-1].event == "run.completed"
    assert events[-1].json()["finish_reason"] == "tool_calls"
    assert fake.requests[0].json()["tools"][0]["function"]["name"] == "get_weather"

    parts = (await front.api.snapshot(cid)).json()["messages"][1]["parts"]
    assert parts == [
        {"type": "text", "text": streams.TOOL_TEXT},
        {
            "type": "tool_call",
            "call_id": "call_Vx8mQ2",
            "name": "get_weather",
            "arguments": {"city": "Paris"},
        },
        {"type": "tool_call", "call_id": "call_Tq4nB7", "name": "get_time", "arguments": {}},
    ]


async def test_tools_for_a_model_that_cannot_take_them_are_refused(
    stack: Stack, tmp_path: Path
) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models.local]\nprovider = "ollama"\n')
    stack.start(workers=0, models_file=str(path))
    front = stack.fronts[0]
    for model in ("local", "simulated"):
        refused = await front.api.post_message(new_cid(), "hi", model=model, tools=[WEATHER_TOOL])
        assert refused.status_code == 422 and error_code(refused) == "invalid_field", refused.text


async def test_a_generator_can_read_a_model_s_answer_without_showing_it(
    stack: Stack, fake: FakeUpstream
) -> None:
    fake.reply(sse_reply(streams.OPENAI_CHAT_TOOLS))
    stack.start(
        openai_base_url=fake.url + "/v1",
        openai_models="gpt-test",
        generators="collector=tests.app_generators:collects",
    )
    front = stack.fronts[0]
    cid = new_cid()
    response = await front.api.request(
        "POST",
        f"/v1/conversations/{cid}/messages",
        json={
            "content": "Weather in Paris?",
            "model": "collector",
            "params": {"model": "gpt-test", "tools": [WEATHER_TOOL]},
        },
    )
    run_id = response.json()["run_id"]
    async with await front.api.run_stream(cid, run_id) as client:
        events = await client.read_to_end(timeout=30)
    assert [e.event for e in events] == ["message", "run.started", "data", "run.completed"]
    assert events[2].json()["value"] == {
        "text": streams.TOOL_TEXT,
        "calls": [
            ["call_Vx8mQ2", "get_weather", {"city": "Paris"}],
            ["call_Tq4nB7", "get_time", {}],
        ],
        "end": "Finish",
    }
