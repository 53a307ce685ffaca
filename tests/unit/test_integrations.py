"""The integrations' pure parts, with no Redis and no process: the tool call bookkeeping, the
failure codes, the turns a catalogue model is asked with, and each framework's run mapped onto a
recording ``Run`` (the frameworks' own test models, in this process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from broker.core.events import Usage
from workers.integrations._common import ToolCalls, failing, jsonable, require, turns_to_request
from workers.providers.base import Failure, Finish, Message, Text, ToolCallDelta, ToolCallWhole
from workers.relay import CancelRequested, RunGone
from workers.run import GeneratorFailure

pytestmark = pytest.mark.anyio


class Recorder:
    """What a generator's ``Run`` offers, recording every emit; ``model`` answers with
    ``answers``, one list of chunks per call, and records each request."""

    def __init__(self, answers: list[list[Any]] | None = None) -> None:
        self.prompt = "Weather in Paris?"
        self.history = (Message("user", "Hi"), Message("assistant", "Hello!"))
        self.params: dict[str, Any] = {}
        self.conversation_id = "c1"
        self.events: list[tuple[Any, ...]] = []
        self.usage: Usage | None = None
        self.finish_reason = "stop"
        self.answers = list(answers or [])
        self.requests: list[dict[str, Any]] = []

    async def text(self, text: str) -> None:
        if text:
            self.events.append(("text", text))

    async def reasoning(self, text: str) -> None:
        self.events.append(("reasoning", text))

    async def tool_call_delta(self, call_id: str, name: str, piece: str) -> None:
        self.events.append(("piece", call_id, name, piece))

    async def tool_call(self, call_id: str, name: str, arguments: Any) -> None:
        self.events.append(("call", call_id, name, arguments))

    async def tool_result(self, call_id: str, result: Any, is_error: bool = False) -> None:
        self.events.append(("result", call_id, result, is_error))

    async def data(self, name: str, value: Any) -> None:
        self.events.append(("data", name, value))

    def model(self, name: str, **request: Any) -> AsyncIterator[Any]:
        self.requests.append({"name": name, **request})
        chunks = self.answers.pop(0)

        async def stream() -> AsyncIterator[Any]:
            for chunk in chunks:
                yield chunk

        return stream()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_call_s_pieces_go_out_then_the_whole_call_and_its_result_once() -> None:
    run = Recorder()
    calls = ToolCalls(run)  # type: ignore[arg-type]
    await calls.piece("c1", "weather", '{"city": ')
    await calls.piece("c1", "", '"Paris"}')
    await calls.whole("c1", "weather", '{"city": "Paris"}')
    await calls.whole("c1", "weather", {"city": "Paris"})  # reported again when the tool starts
    await calls.result("c1", {"sky": "sunny"})
    await calls.result("c1", {"sky": "sunny"})
    assert run.events == [
        ("piece", "c1", "weather", '{"city": '),
        ("piece", "c1", "weather", '"Paris"}'),
        ("call", "c1", "weather", {"city": "Paris"}),
        ("result", "c1", {"sky": "sunny"}, False),
    ]


async def test_a_failure_inside_a_running_tool_answers_its_call_and_names_no_text() -> None:
    run = Recorder()
    calls = ToolCalls(run)  # type: ignore[arg-type]
    await calls.whole("c1", "weather", {})
    with pytest.raises(GeneratorFailure) as failed:
        async with failing(lambda exc: None, calls, "Test"):
            raise RuntimeError("password=hunter2")
    assert (failed.value.code, failed.value.message) == ("tool_error", "a tool raised RuntimeError")
    assert run.events[-1] == ("result", "c1", "the tool raised RuntimeError", True)
    with pytest.raises(GeneratorFailure) as failed:
        async with failing(lambda exc: None, ToolCalls(run), "Test"):  # type: ignore[arg-type]
            raise ValueError("password=hunter2")
    assert (failed.value.code, failed.value.message) == (
        "agent_error",
        "the Test agent raised ValueError",
    )


@pytest.mark.parametrize(
    "stop", [asyncio.CancelledError(), CancelRequested(), RunGone(), GeneratorFailure("x", "y")]
)
async def test_stops_pass_through_whole_and_out_of_groups(stop: BaseException) -> None:
    calls = ToolCalls(Recorder())  # type: ignore[arg-type]
    with pytest.raises(type(stop)):
        async with failing(lambda exc: Failure("never", "never"), calls, "Test"):
            raise stop
    if isinstance(stop, Exception):
        with pytest.raises(type(stop)):
            async with failing(lambda exc: Failure("never", "never"), calls, "Test"):
                raise ExceptionGroup("tasks", [ValueError(), stop])


def test_a_missing_framework_names_the_extra_to_install() -> None:
    with pytest.raises(ImportError, match=r'pip install "llm-stream-broker\[nothing\]"'):
        require("no_such_framework_here", "nothing")


def test_a_transcript_becomes_a_prompt_and_alternating_history() -> None:
    prompt, history = turns_to_request(
        [
            ("user", "Be brief."),
            ("user", "Weather?"),
            ("assistant", "[tool call weather: {}]"),
            ("user", "[tool result weather: sunny]"),
        ]
    )
    assert prompt == "[tool result weather: sunny]"
    assert history == (
        Message("user", "Be brief.\n\nWeather?"),
        Message("assistant", "[tool call weather: {}]"),
    )


def test_values_become_json() -> None:
    class City(BaseModel):
        name: str

    assert jsonable({"city": City(name="Paris"), "raw": b"ok"}) == {
        "city": {"name": "Paris"},
        "raw": "b2s=",  # bytes as msgspec writes them: base64
    }
    assert jsonable(object()).startswith("<object")


# -- the frameworks, each on its own test model -------------------------------------------------


async def test_pydantic_ai_history_and_structured_output() -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.test import TestModel

    from workers.integrations.pydantic_ai import stream_pydantic_ai

    class Forecast(BaseModel):
        city: str
        sky: str

    agent = Agent(
        TestModel(custom_output_args={"city": "Paris", "sky": "sunny"}), output_type=Forecast
    )

    run = Recorder()
    result = await stream_pydantic_ai(run, agent)  # type: ignore[arg-type]
    # The output tool is the run's output, sent as data; it is no tool call of the app's.
    assert run.events == [("data", "output", {"city": "Paris", "sky": "sunny"})]
    seen = result.all_messages()
    texts = [part.content for message in seen[:3] for part in message.parts]
    assert texts == ["Hi", "Hello!", "Weather in Paris?"]
    assert run.usage is not None and run.finish_reason == "stop"


async def test_pydantic_ai_over_a_catalogue_model() -> None:
    from pydantic_ai import Agent

    from workers.integrations.pydantic_ai import catalogue_model, stream_pydantic_ai

    run = Recorder(
        [
            [
                Text("Checking.", "reasoning"),
                ToolCallDelta("k1", "weather", '{"city": '),
                ToolCallDelta("k1", "weather", '"Paris"}'),
                ToolCallWhole("k1", "weather", {"city": "Paris"}),
                Finish("tool_calls"),
            ],
            [Text("Sunny."), Finish("stop", Usage(3, 1))],
        ]
    )
    agent = Agent(catalogue_model(run, "gpt", temperature=0))  # type: ignore[arg-type]

    @agent.tool_plain
    def weather(city: str) -> str:
        """The weather of a city."""
        return f"sunny in {city}"

    await stream_pydantic_ai(run, agent)  # type: ignore[arg-type]
    assert run.events == [
        ("reasoning", "Checking."),
        ("piece", "k1", "weather", '{"city": '),
        ("piece", "k1", "weather", '"Paris"}'),
        ("call", "k1", "weather", {"city": "Paris"}),
        ("result", "k1", "sunny in Paris", False),
        ("text", "Sunny."),
    ]
    first, second = run.requests
    assert first["params"]["temperature"] == 0
    assert [tool["name"] for tool in first["params"]["tools"]] == ["weather"]
    assert first["prompt"] == "Weather in Paris?"
    assert second["prompt"] == "[tool result weather: sunny in Paris]"
    assert second["history"][-1] == Message("assistant", '[tool call weather: {"city": "Paris"}]')


async def test_pydantic_ai_a_catalogue_model_failure_keeps_its_code() -> None:
    from pydantic_ai import Agent

    from workers.integrations.pydantic_ai import catalogue_model, stream_pydantic_ai

    run = Recorder([[Failure("rate_limited", "the model answered HTTP 429")]])
    with pytest.raises(GeneratorFailure) as failed:
        await stream_pydantic_ai(run, Agent(catalogue_model(run, "gpt")))  # type: ignore[arg-type]
    assert failed.value.code == "rate_limited"


async def test_langgraph_over_a_catalogue_chat_model() -> None:
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from workers.integrations.langgraph import catalogue_chat_model, stream_langgraph

    @tool
    def weather(city: str) -> str:
        """The weather of a city."""
        return f"sunny in {city}"

    run = Recorder(
        [
            [
                ToolCallDelta("k1", "weather", '{"city": '),
                ToolCallDelta("k1", "weather", '"Paris"}'),
                Finish("tool_calls", Usage(5, 2)),
            ],
            [Text("Sunny", "reasoning"), Text("It is sunny."), Finish("stop", Usage(7, 3))],
        ]
    )
    model = catalogue_chat_model(run, "gpt").bind_tools([weather])  # type: ignore[arg-type]

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([weather]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    await stream_langgraph(run, builder.compile())  # type: ignore[arg-type]

    assert [e for e in run.events if e[0] != "data"] == [
        ("piece", "k1", "weather", '{"city": '),
        ("piece", "k1", "weather", '"Paris"}'),
        ("call", "k1", "weather", {"city": "Paris"}),
        ("result", "k1", "sunny in Paris", False),
        ("reasoning", "Sunny"),
        ("text", "It is sunny."),
    ]
    assert run.usage == Usage(12, 5)
    assert run.finish_reason == "stop"
    assert [tool["name"] for tool in run.requests[0]["params"]["tools"]] == ["weather"]
    assert run.requests[0]["history"] == (Message("user", "Hi"), Message("assistant", "Hello!"))
    assert isinstance(HumanMessage("x"), HumanMessage)


async def test_openai_agents_history_and_structured_output() -> None:
    from agents import Agent, RunConfig
    from agents.testing import ModelStep, ScriptedModel, assistant_message

    from workers.integrations.openai_agents import stream_openai_agent

    class Forecast(BaseModel):
        city: str

    model = ScriptedModel([ModelStep(output=[assistant_message('{"city": "Paris"}')])])
    agent = Agent(name="a", model=model, output_type=Forecast)
    run = Recorder()
    await stream_openai_agent(run, agent, run_config=RunConfig(tracing_disabled=True))  # type: ignore[arg-type]
    assert run.events == [("text", '{"city": "Paris"}'), ("data", "output", {"city": "Paris"})]
    sent = model.first_call.input  # type: ignore[union-attr]
    assert sent == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Weather in Paris?"},
    ]
