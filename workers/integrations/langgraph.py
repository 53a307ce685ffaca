"""LangGraph graphs, run durably: ``await stream_langgraph(run, graph)``.

The graph is streamed (``astream`` with the ``messages``, ``updates``, ``tasks`` and ``custom``
modes) in a task the integration owns: a cancel of the run cancels that task once, as asyncio
code expects, which cancels the graph's running nodes (an open model stream, a tool) and starts
no later one, and waits for it to close them. Its stream becomes the broker's events:

- the chat models' message chunks: ``delta`` for their text (content) and reasoning blocks
  (reasoning); ``tool_call_chunks``: ``tool.call`` pieces under the model's call id; the whole
  calls from the node's update once the model finished;
- ``ToolMessage`` (a tool node's answer): ``tool.result``, ``is_error`` when its status is
  ``error``;
- a node starting: ``data`` named ``node`` (``{"name"}``); what a node writes with its stream
  writer: ``data`` named ``custom``; an interrupt: ``data`` named ``interrupt`` (the run then
  completes with the finish reason ``interrupted``); a ``structured_response`` in an update
  (``create_agent`` with a response format): ``data`` named ``output``;
- the models' ``usage_metadata`` and last finish reason: ``run.completed``.

Needs the ``langgraph`` extra (``pip install "llm-stream-broker[langgraph]"``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

from workers.integrations._common import (
    LIMIT_EXCEEDED,
    MODEL_BEHAVIOR,
    ToolCalls,
    failing,
    history,
    http_failure,
    jsonable,
    own_task,
    require,
    tool_call_text,
    tool_result_text,
    tool_specs,
    turns_to_request,
    usage,
)
from workers.providers.base import Failure, Finish, Message, Text, ToolCallDelta, ToolCallWhole
from workers.run import GeneratorFailure, Run

_EXTRA = "langgraph"
require("langgraph", _EXTRA)

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun  # noqa: E402
from langchain_core.exceptions import OutputParserException  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from langgraph.errors import GraphRecursionError  # noqa: E402

__all__ = ["catalogue_chat_model", "langchain_history", "stream_langgraph"]

_MODES = ["messages", "updates", "tasks", "custom"]
_INTERRUPT = "__interrupt__"


def langchain_history(messages: Sequence[Message]) -> list[BaseMessage]:
    """The conversation's earlier turns as LangChain messages."""
    return history(messages, HumanMessage, AIMessage)


async def stream_langgraph(
    run: Run,
    graph: Any,
    input: Any = None,
    **stream_options: Any,
) -> None:
    """Stream ``graph`` on this run's prompt and history, its stream going out as events.

    ``input`` defaults to ``{"messages": [*history, HumanMessage(prompt)]}`` (a graph over
    ``MessagesState``); ``stream_options`` go to ``graph.astream`` as they are (``config``,
    ``context``, ...). Sets ``run.usage`` and ``run.finish_reason``. Failures raise
    ``GeneratorFailure``.
    """
    if input is None:
        input = {"messages": [*langchain_history(run.history), HumanMessage(run.prompt)]}
    tools = ToolCalls(run)
    mapper = _Mapper(run, tools)

    async def consume() -> None:
        stream = graph.astream(input, stream_mode=_MODES, **stream_options)
        async with aclosing(stream):
            async for mode, chunk in stream:
                await mapper.event(mode, chunk)

    async with failing(_classify, tools, "LangGraph"):
        await own_task(consume())
    run.usage = usage(mapper.input_tokens, mapper.output_tokens, mapper.reasoning_tokens)
    run.finish_reason = mapper.finish_reason


class _Mapper:
    """LangGraph's stream, mode by mode, as the broker's events."""

    def __init__(self, run: Run, tools: ToolCalls) -> None:
        self._run = run
        self._tools = tools
        # (message id, chunk index) -> call id: a call's later chunks carry its index only.
        self._chunk_calls: dict[tuple[str | None, int], str] = {}
        self._counted: set[str] = set()  # the ids of the messages whose usage was added
        self.input_tokens = self.output_tokens = self.reasoning_tokens = 0
        self.finish_reason = "stop"

    async def event(self, mode: str, chunk: Any) -> None:
        if mode == "messages":
            message, _metadata = chunk
            await self._message(message)
        elif mode == "updates":
            for node, update in chunk.items():
                await self._update(node, update)
        elif mode == "tasks":
            if "input" in chunk and "result" not in chunk:  # a task starting, not its end
                await self._run.data("node", {"name": chunk["name"]})
        elif mode == "custom":
            await self._run.data("custom", jsonable(chunk))

    async def _message(self, message: BaseMessage) -> None:
        if isinstance(message, AIMessageChunk):
            await self._text(message)
            for piece in message.tool_call_chunks:
                key = (message.id, piece.get("index") or 0)
                call_id = piece.get("id") or self._chunk_calls.get(key)
                if call_id is None:
                    continue
                self._chunk_calls[key] = call_id
                await self._tools.piece(call_id, piece.get("name") or "", piece.get("args") or "")
        elif isinstance(message, AIMessage):
            # A model that did not stream: its whole answer at once.
            await self._text(message)
            await self._whole_calls(message)
        elif isinstance(message, ToolMessage):
            await self._tool_message(message)

    async def _text(self, message: AIMessage) -> None:
        if isinstance(message.content, str):
            await self._run.text(message.content)
            return
        for block in message.content_blocks:
            if block["type"] == "text":
                await self._run.text(block.get("text", ""))
            elif block["type"] == "reasoning":
                await self._run.reasoning(block.get("reasoning", ""))

    async def _update(self, node: str, update: Any) -> None:
        if node == _INTERRUPT:
            values = update if isinstance(update, (list, tuple)) else [update]
            for interrupt in values:
                await self._run.data("interrupt", jsonable(getattr(interrupt, "value", interrupt)))
            self.finish_reason = "interrupted"
            return
        if not isinstance(update, dict):
            return
        for key, value in update.items():
            if key == "structured_response":
                await self._run.data("output", jsonable(value))
            for message in value if isinstance(value, list) else [value]:
                if isinstance(message, AIMessage):
                    await self._whole_calls(message)
                    self._count(message)
                elif isinstance(message, ToolMessage):
                    await self._tool_message(message)

    async def _whole_calls(self, message: AIMessage) -> None:
        for call in message.tool_calls:
            if call.get("id"):
                await self._tools.whole(call["id"], call["name"], call.get("args", {}))

    async def _tool_message(self, message: ToolMessage) -> None:
        content: Any = message.content
        if isinstance(content, str):
            try:
                content = json.loads(content)
            except ValueError:
                pass
        await self._tools.result(message.tool_call_id, content, message.status == "error")

    def _count(self, message: AIMessage) -> None:
        key = message.id or str(id(message))
        if key in self._counted:
            return
        self._counted.add(key)
        counted = message.usage_metadata or {}
        self.input_tokens += counted.get("input_tokens", 0)
        self.output_tokens += counted.get("output_tokens", 0)
        self.reasoning_tokens += (counted.get("output_token_details") or {}).get("reasoning", 0)
        reason = message.response_metadata.get("finish_reason")
        if reason and not message.tool_calls:
            self.finish_reason = str(reason)


def _classify(exc: Exception) -> Failure | None:
    if isinstance(exc, GraphRecursionError):
        return Failure(LIMIT_EXCEEDED, "the graph reached its recursion limit")
    if isinstance(exc, OutputParserException):
        return Failure(MODEL_BEHAVIOR, "the model's answer could not be parsed")
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):  # the vendors' SDK errors (openai, anthropic, ...) carry one
        return http_failure(status)
    return None


# -- the catalogue's models, as a LangChain chat model ---------------------------------------


class _CatalogueChatModel(BaseChatModel):
    """A chat model answered by one of the broker's catalogue models (``run.model``)."""

    run: Any
    catalogue_name: str
    params: dict[str, Any] = {}
    tools: list[dict[str, Any]] = []

    @property
    def _llm_type(self) -> str:
        return "llm-stream-broker"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> _CatalogueChatModel:  # type: ignore[override]
        specs = []
        for tool in tools:
            function = convert_to_openai_tool(tool)["function"]
            specs.append(
                (function["name"], function.get("description"), function.get("parameters"))
            )
        return self.model_copy(update={"tools": tool_specs(specs)})

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("a catalogue model is called asynchronously (ainvoke, astream)")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        whole: AIMessageChunk | None = None
        async for chunk in self._astream(messages, stop, run_manager, **kwargs):
            whole = chunk.message if whole is None else whole + chunk.message  # type: ignore[assignment,operator]
        message = whole if whole is not None else AIMessageChunk(content="")
        return ChatResult(generations=[ChatGeneration(message=_finished(message))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        prompt, earlier = turns_to_request(_turns(messages))
        params = {**self.params, **({"tools": self.tools} if self.tools else {})}
        indexes: dict[str, int] = {}
        async for chunk in self.run.model(
            self.catalogue_name, prompt=prompt, history=earlier, params=params
        ):
            message: AIMessageChunk
            if isinstance(chunk, Text):
                if chunk.channel == "reasoning":
                    message = AIMessageChunk(
                        content=[{"type": "reasoning", "reasoning": chunk.text}]
                    )
                else:
                    message = AIMessageChunk(content=chunk.text)
            elif isinstance(chunk, (ToolCallDelta, ToolCallWhole)):
                if isinstance(chunk, ToolCallWhole) and chunk.call_id in indexes:
                    continue  # its pieces came first
                first = chunk.call_id not in indexes
                index = indexes.setdefault(chunk.call_id, len(indexes))
                pieces = (
                    chunk.arguments_delta
                    if isinstance(chunk, ToolCallDelta)
                    else json.dumps(jsonable(chunk.arguments))
                )
                message = AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {
                            "id": chunk.call_id if first else None,
                            "name": chunk.name if first else None,
                            "args": pieces,
                            "index": index,
                        }
                    ],
                )
            elif isinstance(chunk, Finish):
                counted = chunk.usage
                message = AIMessageChunk(
                    content="",
                    response_metadata={"finish_reason": chunk.reason},
                    usage_metadata=(
                        {
                            "input_tokens": counted.input_tokens,
                            "output_tokens": counted.output_tokens,
                            "total_tokens": counted.input_tokens + counted.output_tokens,
                        }
                        if counted is not None
                        else None
                    ),
                    chunk_position="last",
                )
            elif isinstance(chunk, Failure):
                raise GeneratorFailure(chunk.code, chunk.message)
            else:
                continue
            generation = ChatGenerationChunk(message=message)
            if run_manager is not None and isinstance(message.content, str):
                await run_manager.on_llm_new_token(message.content, chunk=generation)
            yield generation


def _finished(message: AIMessageChunk) -> AIMessage:
    return AIMessage(
        content=message.content,
        tool_calls=message.tool_calls,
        usage_metadata=message.usage_metadata,
        response_metadata=message.response_metadata,
        id=message.id,
    )


def catalogue_chat_model(run: Run, name: str, **params: Any) -> BaseChatModel:
    """A LangChain chat model answered by the broker's catalogue model ``name``.

    The catalogue entry's key, base URL and upstream name serve the graph; ``params`` (e.g.
    ``temperature``) go with every request, and ``bind_tools`` adds the tools. The catalogue's
    providers take text turns, so earlier tool calls and results reach the model as text. A
    model failure ends the run with the provider's code, as a built-in model's would.
    """
    return _CatalogueChatModel(run=run, catalogue_name=name, params=params)


def _turns(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    for message in messages:
        if isinstance(message, AIMessage):
            turns.append(("assistant", message.text))
            for call in message.tool_calls:
                turns.append(("assistant", tool_call_text(call["name"], call.get("args", {}))))
        elif isinstance(message, ToolMessage):
            turns.append(("user", tool_result_text(message.name, message.text)))
        else:
            turns.append(("user", message.text))
    return turns
