"""Agents of the three frameworks, registered through ``BROKER_GENERATORS`` by the tests.

Each agent answers the same script with its framework's real machinery, driven by the
framework's own test double instead of a model over the network: it thinks, calls the tool
``get_weather`` (its arguments streamed in pieces), reads the result, then streams the answer
word by word. ``params`` shape a run: ``tool_seconds`` (how long the tool takes), ``words`` and
``word_seconds`` (the answer's extra words and the pause before each), ``fail``: ``tool`` (the
tool raises, with a secret in its message) or ``framework`` (the framework's own limit stops
the run after the tool). What the tests look for in the worker's log: the tool starting and
being stopped, the model being called, and a model stream closed before its end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic_ai import Agent, RunContext

from workers.run import Run

log = logging.getLogger("tests.app_agents")

SECRET = "weather-db-password-93b1d2"
REASONING = "The user wants the weather; I will look it up."
CALL_ID = "call_weather_1"


@dataclass(frozen=True)
class Script:
    """What one run's params ask of the agent."""

    framework: str
    city: str
    tool_seconds: float
    words: int
    word_seconds: float
    fail: str

    @classmethod
    def of(cls, run: Run, framework: str) -> Script:
        params = run.params
        return cls(
            framework,
            str(params.get("city", "Paris")),
            float(params.get("tool_seconds", 0)),
            int(params.get("words", 8)),
            float(params.get("word_seconds", 0.01)),
            str(params.get("fail", "")),
        )

    @property
    def arguments(self) -> str:
        return json.dumps({"city": self.city})

    def answer_words(self, weather: Any) -> list[str]:
        sky = weather.get("sky", "unknown") if isinstance(weather, dict) else "unknown"
        return [f"In {self.city} it is {sky}. "] + [f"word{i} " for i in range(self.words)]

    async def weather(self, city: str) -> dict[str, Any]:
        """The tool: slow when asked, and it says in the log whether it finished."""
        log.info("%s get_weather(%s) started", self.framework, city)
        finished = False
        try:
            await anyio.sleep(self.tool_seconds)
            if self.fail == "tool":
                raise RuntimeError(f"cannot reach the weather database with {SECRET}")
            finished = True
            return {"city": city, "sky": "sunny", "celsius": 21}
        finally:
            if not finished:
                log.info("%s get_weather stopped before it finished", self.framework)

    async def words_slowly(self, words: list[str]) -> AsyncIterator[str]:
        """The answer's words, each after a pause; a stream closed early says so."""
        done = False
        try:
            for word in words:
                await anyio.sleep(self.word_seconds)
                yield word
            done = True
        finally:
            if not done:
                log.info("%s model stream closed before its end", self.framework)


def _pieces(text: str, size: int = 6) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- Pydantic AI ------------------------------------------------------------------------------


def _pydantic_ai_agent() -> Any:
    agent: Agent[Script, str] = Agent(
        deps_type=Script, instructions="Answer questions about the weather."
    )

    @agent.tool
    async def get_weather(context: RunContext[Script], city: str) -> dict[str, Any]:
        """The current weather of a city."""
        return await context.deps.weather(city)

    return agent


async def pydantic_ai_weather(run: Run) -> None:
    from pydantic_ai.messages import ToolReturnPart
    from pydantic_ai.models.function import (
        AgentInfo,
        DeltaThinkingPart,
        DeltaToolCall,
        FunctionModel,
    )
    from pydantic_ai.usage import UsageLimits

    from workers.integrations.pydantic_ai import stream_pydantic_ai

    script = Script.of(run, "pydantic_ai")

    async def model(messages: list[Any], info: AgentInfo) -> AsyncIterator[Any]:
        returned = [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
        log.info("pydantic_ai model call %d", 2 if returned else 1)
        if not returned:
            yield {0: DeltaThinkingPart(content=REASONING)}
            for index, piece in enumerate(_pieces(script.arguments)):
                name = "get_weather" if index == 0 else None
                yield {1: DeltaToolCall(name, piece, tool_call_id=CALL_ID)}
            return
        async for word in script.words_slowly(script.answer_words(returned[0].content)):
            yield word

    limits = UsageLimits(request_limit=1) if script.fail == "framework" else None
    await stream_pydantic_ai(
        run,
        _pydantic_ai_agent(),
        deps=script,
        model=FunctionModel(stream_function=model),
        usage_limits=limits,
    )


# -- OpenAI Agents SDK --------------------------------------------------------------------------


def _text_events(words: AsyncIterator[str]) -> AsyncIterator[Any]:
    """A message streamed as the Responses API streams one: item, part, deltas, done events."""
    from openai.types.responses import (
        Response,
        ResponseCompletedEvent,
        ResponseContentPartAddedEvent,
        ResponseContentPartDoneEvent,
        ResponseOutputItemAddedEvent,
        ResponseOutputItemDoneEvent,
        ResponseOutputMessage,
        ResponseOutputText,
        ResponseTextDeltaEvent,
        ResponseTextDoneEvent,
        ResponseUsage,
    )
    from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

    async def events() -> AsyncIterator[Any]:
        item = "msg_answer"
        message = ResponseOutputMessage(
            id=item, type="message", role="assistant", status="in_progress", content=[]
        )
        empty = ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[])
        n = 0
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added", item=message, output_index=0, sequence_number=n
        )
        yield ResponseContentPartAddedEvent(
            type="response.content_part.added",
            item_id=item,
            output_index=0,
            content_index=0,
            part=empty,
            sequence_number=n,
        )
        text = ""
        async for word in words:
            n += 1
            text += word
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta",
                item_id=item,
                output_index=0,
                content_index=0,
                delta=word,
                logprobs=[],
                sequence_number=n,
            )
        part = ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])
        done = message.model_copy(update={"status": "completed", "content": [part]})
        yield ResponseTextDoneEvent(
            type="response.output_text.done",
            item_id=item,
            output_index=0,
            content_index=0,
            text=text,
            logprobs=[],
            sequence_number=n + 1,
        )
        yield ResponseContentPartDoneEvent(
            type="response.content_part.done",
            item_id=item,
            output_index=0,
            content_index=0,
            part=part,
            sequence_number=n + 2,
        )
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done", item=done, output_index=0, sequence_number=n + 3
        )
        usage = ResponseUsage(
            input_tokens=20,
            output_tokens=n,
            total_tokens=20 + n,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        )
        response = Response(
            id="resp_answer",
            created_at=0,
            model="scripted",
            object="response",
            output=[done],
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=False,
            status="completed",
            usage=usage,
        )
        yield ResponseCompletedEvent(
            type="response.completed", response=response, sequence_number=n + 4
        )

    return events()


async def openai_agents_weather(run: Run) -> None:
    from agents import Agent, RunConfig, function_tool
    from agents.testing import ModelStep, ScriptedModel, function_call
    from agents.usage import Usage
    from openai.types.responses import ResponseReasoningItem
    from openai.types.responses.response_reasoning_item import Summary

    from workers.integrations.openai_agents import stream_openai_agent

    script = Script.of(run, "openai_agents")

    @function_tool
    async def get_weather(city: str) -> dict[str, Any]:
        """The current weather of a city."""
        return await script.weather(city)

    def answer(call: Any) -> AsyncIterator[Any]:
        log.info("openai_agents model call 3")
        outputs = [i for i in call.input if isinstance(i, dict) and i.get("call_id") == CALL_ID]
        # The SDK gives the model the tool's output as text.
        sunny = bool(outputs) and "sunny" in str(outputs[-1].get("output"))
        weather = {"sky": "sunny"} if sunny else {}
        return _text_events(script.words_slowly(script.answer_words(weather)))

    thinking = ResponseReasoningItem(
        id="rs_1", type="reasoning", summary=[Summary(type="summary_text", text=REASONING)]
    )
    model = ScriptedModel(
        [
            ModelStep(
                output=[thinking, function_call("get_weather", script.arguments, call_id=CALL_ID)],
                usage=Usage(requests=1, input_tokens=12, output_tokens=7, total_tokens=19),
            ),
            ModelStep(output=[function_call("transfer_to_writer", {}, call_id="call_handoff")]),
            ModelStep.stream(answer),
        ]
    )
    writer = Agent(name="writer", instructions="Write the answer.", model=model)
    triage = Agent(
        name="triage",
        instructions="Look the weather up, then hand off to the writer.",
        model=model,
        tools=[get_weather],
        handoffs=[writer],
    )
    await stream_openai_agent(
        run,
        triage,
        max_turns=1 if script.fail == "framework" else 10,
        run_config=RunConfig(tracing_disabled=True),
    )


# -- LangGraph ----------------------------------------------------------------------------------


def _langgraph_graph(script: Script) -> Any:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
    from langchain_core.outputs import ChatGenerationChunk
    from langchain_core.tools import tool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    class ScriptedChatModel(GenericFakeChatModel):
        """LangChain's fake chat model, streaming reasoning, tool call chunks and words with
        pauses (its own streams whole text only, and no tool calls)."""

        def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
            return self

        async def _astream(  # type: ignore[override]
            self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any
        ) -> AsyncIterator[ChatGenerationChunk]:
            returned = [m for m in messages if isinstance(m, ToolMessage)]
            log.info("langgraph model call %d", 2 if returned else 1)
            message = next(self.messages)
            assert isinstance(message, AIMessage)
            if message.tool_calls:
                yield ChatGenerationChunk(
                    message=AIMessageChunk(content=[{"type": "reasoning", "reasoning": REASONING}])
                )
                call = message.tool_calls[0]
                for index, piece in enumerate(_pieces(json.dumps(call["args"]))):
                    first = index == 0
                    chunk = {
                        "id": call["id"] if first else None,
                        "name": call["name"] if first else None,
                        "args": piece,
                        "index": 0,
                    }
                    yield ChatGenerationChunk(
                        message=AIMessageChunk(content="", tool_call_chunks=[chunk])
                    )
            else:
                weather = json.loads(returned[-1].text) if returned else {}
                async for word in script.words_slowly(script.answer_words(weather)):
                    yield ChatGenerationChunk(message=AIMessageChunk(content=word))
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    usage_metadata={"input_tokens": 10, "output_tokens": 6, "total_tokens": 16},
                    response_metadata={
                        "finish_reason": "tool_calls" if message.tool_calls else "stop"
                    },
                    chunk_position="last",
                )
            )

    @tool
    async def get_weather(city: str) -> dict[str, Any]:
        """The current weather of a city."""
        return await script.weather(city)

    call = {"id": CALL_ID, "name": "get_weather", "args": {"city": script.city}}
    model = ScriptedChatModel(
        messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="")])
    ).bind_tools([get_weather])

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


async def langgraph_weather(run: Run) -> None:
    from workers.integrations.langgraph import stream_langgraph

    script = Script.of(run, "langgraph")
    config = {"recursion_limit": 2} if script.fail == "framework" else {}
    await stream_langgraph(run, _langgraph_graph(script), config=config)
