"""Pydantic AI agents, run durably: ``await stream_pydantic_ai(run, agent, deps=...)``.

The agent runs (``Agent.run`` with an event stream handler) in a task the integration owns: a
cancel of the run cancels that task once, as asyncio code expects, which closes the agent's open
model stream and its running tools and starts no later tool call, and waits for it to close them. Its stream becomes the broker's events:

- text parts and their deltas: ``delta`` (content); thinking parts: ``delta`` (reasoning);
- function and native tool calls: ``tool.call`` pieces as the arguments stream, then the whole
  call (under the framework's ``tool_call_id``); their returns: ``tool.result``, ``is_error`` for
  the outcomes Pydantic AI reports to the model as errors (``failed``, ``retried``);
- structured output (a non-text ``output_type``): ``data`` named ``output`` at the end, not the
  output tool's call; a streamed response the agent rejected: ``data`` named
  ``response_rejected``;
- usage and the last response's finish reason: ``run.completed``.

Needs the ``pydantic-ai`` extra (``pip install "llm-stream-broker[pydantic-ai]"``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from workers.integrations._common import (
    GUARDRAIL,
    LIMIT_EXCEEDED,
    MODEL_BEHAVIOR,
    MODEL_TIMEOUT,
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
from workers.providers.base import Failure, Message, Text, ToolCallDelta, ToolCallWhole
from workers.run import GeneratorFailure, Run

_EXTRA = "pydantic-ai"
require("pydantic_ai", _EXTRA)

from pydantic_ai import exceptions  # noqa: E402
from pydantic_ai import messages as pa  # noqa: E402
from pydantic_ai.models.function import (  # noqa: E402
    AgentInfo,
    DeltaThinkingPart,
    DeltaToolCall,
    FunctionModel,
)

if TYPE_CHECKING:
    from pydantic_ai.agent import AbstractAgent
    from pydantic_ai.run import AgentRunResult

__all__ = ["catalogue_model", "pydantic_ai_history", "stream_pydantic_ai"]

# Output tools are how Pydantic AI asks for structured output: that is the run's output, sent
# as ``data``, not a tool call of the application's.
_OUTPUT_KIND = "output"


def pydantic_ai_history(messages: Sequence[Message]) -> list[pa.ModelMessage]:
    """The conversation's earlier turns as Pydantic AI's ``message_history``."""
    return history(
        messages,
        lambda text: pa.ModelRequest(parts=[pa.UserPromptPart(content=text)]),
        lambda text: pa.ModelResponse(parts=[pa.TextPart(content=text)]),
    )


async def stream_pydantic_ai(
    run: Run,
    agent: AbstractAgent[Any, Any],
    *,
    prompt: str | None = None,
    message_history: Sequence[pa.ModelMessage] | None = None,
    **run_options: Any,
) -> AgentRunResult[Any]:
    """Run ``agent`` on this run's prompt and history, its stream going out as events.

    ``run_options`` go to ``agent.run`` as they are (``deps``, ``model``, ``usage_limits``,
    ``model_settings``, ...). Sets ``run.usage`` and ``run.finish_reason``; returns the agent's
    result. Failures raise ``GeneratorFailure`` (see the docs' table of codes).
    """
    tools = ToolCalls(run)
    mapper = _Mapper(run, tools)
    if message_history is None:
        message_history = pydantic_ai_history(run.history)

    async def handler(_context: Any, events: AsyncIterable[Any]) -> None:
        async for event in events:
            await mapper.event(event)

    async with failing(_classify, tools, "Pydantic AI"):
        result = await own_task(
            agent.run(
                run.prompt if prompt is None else prompt,
                message_history=list(message_history),
                event_stream_handler=handler,
                **run_options,
            )
        )
    if not isinstance(result.output, str):
        await run.data("output", jsonable(result.output))
    counted = result.usage
    details = getattr(counted, "details", None) or {}
    run.usage = usage(counted.input_tokens, counted.output_tokens, details.get("reasoning_tokens"))
    run.finish_reason = result.response.finish_reason or "stop"
    return result


class _Mapper:
    """Pydantic AI's agent stream events, as the broker's events."""

    def __init__(self, run: Run, tools: ToolCalls) -> None:
        self._run = run
        self._tools = tools
        # Streamed part index -> tool call id, for the deltas of the current response.
        self._parts: dict[int, str] = {}
        self._output_calls: set[str] = set()

    async def event(self, event: Any) -> None:
        if isinstance(event, pa.PartStartEvent):
            await self._start(event.index, event.part)
        elif isinstance(event, pa.PartDeltaEvent):
            await self._delta(event.index, event.delta)
        elif isinstance(event, pa.PartEndEvent):
            await self._end(event.part)
        elif isinstance(event, pa.FunctionToolCallEvent):
            part = event.part
            await self._tools.whole(part.tool_call_id, part.tool_name, part.args_as_dict())
        elif isinstance(event, pa.FunctionToolResultEvent):
            await self._result(event.part)
        elif isinstance(event, pa.ModelResponseRejectedEvent):
            await self._run.data("response_rejected", {})
        # Everything else (output tool events, the final result marker, compaction, capability
        # and settings deltas) is the framework's own bookkeeping.

    async def _start(self, index: int, part: Any) -> None:
        if isinstance(part, pa.TextPart):
            await self._run.text(part.content)
        elif isinstance(part, pa.ThinkingPart):
            await self._run.reasoning(part.content)
        elif isinstance(part, pa.BaseToolCallPart):
            if part.tool_kind == _OUTPUT_KIND:
                self._output_calls.add(part.tool_call_id)
                return
            self._parts[index] = part.tool_call_id
            if isinstance(part.args, str):
                await self._tools.piece(part.tool_call_id, part.tool_name, part.args)
            else:
                await self._tools.piece(part.tool_call_id, part.tool_name, "")
        elif isinstance(part, pa.NativeToolReturnPart):
            await self._result(part)

    async def _delta(self, index: int, delta: Any) -> None:
        if isinstance(delta, pa.TextPartDelta):
            await self._run.text(delta.content_delta)
        elif isinstance(delta, pa.ThinkingPartDelta):
            if delta.content_delta:
                await self._run.reasoning(delta.content_delta)
        elif isinstance(delta, pa.ToolCallPartDelta):
            call_id = self._parts.get(index)
            if call_id is not None and isinstance(delta.args_delta, str):
                await self._tools.piece(call_id, "", delta.args_delta)

    async def _end(self, part: Any) -> None:
        if isinstance(part, pa.BaseToolCallPart) and part.tool_call_id not in self._output_calls:
            await self._tools.whole(part.tool_call_id, part.tool_name, part.args_as_dict())

    async def _result(self, part: Any) -> None:
        if part.tool_call_id in self._output_calls:
            return
        failed = part.outcome in pa.ERROR_OUTCOMES
        content = part.model_response_str(wrap_if_error=False) if failed else part.content
        await self._tools.result(part.tool_call_id, content, failed)


def _classify(exc: Exception) -> Failure | None:
    if isinstance(exc, exceptions.UsageLimitExceeded):
        return Failure(LIMIT_EXCEEDED, "the agent reached a usage limit")
    if isinstance(exc, exceptions.RunTimedOut):
        return Failure(MODEL_TIMEOUT, "the agent run reached its timeout")
    if isinstance(exc, exceptions.ModelHTTPError):
        return http_failure(exc.status_code)
    if isinstance(exc, (exceptions.ModelTimeoutError, exceptions.ModelRequestTimeout)):
        return Failure(MODEL_TIMEOUT, "the model did not answer in time")
    if isinstance(exc, exceptions.ModelConnectionError):
        return http_failure(None)
    if isinstance(exc, exceptions.ContentFilterError):
        return Failure(GUARDRAIL, "the model's content filter stopped the answer")
    if isinstance(exc, exceptions.ModelAPIError):
        return Failure("upstream_error", "the model's API failed")
    if isinstance(exc, exceptions.UnexpectedModelBehavior):
        # Tool retries or output validation used up, or an answer the agent cannot use.
        return Failure(MODEL_BEHAVIOR, "the model's answer failed validation too many times")
    if isinstance(exc, exceptions.UserError):
        return Failure("agent_error", "the agent is misconfigured (see the worker's log)")
    return None


# -- the catalogue's models, as a Pydantic AI model ----------------------------------------------


def catalogue_model(run: Run, name: str, **params: Any) -> FunctionModel:
    """A Pydantic AI ``Model`` answered by the broker's catalogue model ``name``.

    The catalogue entry's key, base URL and upstream name serve the agent; ``params`` (e.g.
    ``temperature``) go with every request, beside the agent's tools. The catalogue's providers
    take text turns, so earlier tool calls and results reach the model as text. A model failure
    ends the run with the provider's code, as a built-in model's would.
    """

    async def stream(messages: list[pa.ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        prompt, earlier = turns_to_request(_turns(messages, info.instructions))
        specs = tool_specs(
            (t.name, t.description, t.parameters_json_schema)
            for t in [*info.function_tools, *info.output_tools]
        )
        request_params = {**params, **({"tools": specs} if specs else {})}
        # Each call is one streamed part, by its own index; its name goes with its first piece
        # only (Pydantic AI appends names as deltas).
        indexes: dict[str, int] = {}
        async for chunk in run.model(name, prompt=prompt, history=earlier, params=request_params):
            if isinstance(chunk, Text):
                if chunk.channel == "reasoning":
                    yield {0: DeltaThinkingPart(content=chunk.text)}
                else:
                    yield chunk.text
            elif isinstance(chunk, (ToolCallDelta, ToolCallWhole)):
                if isinstance(chunk, ToolCallWhole) and chunk.call_id in indexes:
                    continue  # its pieces came first
                first = chunk.call_id not in indexes
                index = indexes.setdefault(chunk.call_id, len(indexes) + 1)
                pieces = (
                    chunk.arguments_delta
                    if isinstance(chunk, ToolCallDelta)
                    else _arguments_text(chunk.arguments)
                )
                call = DeltaToolCall(
                    chunk.name if first else None, pieces, tool_call_id=chunk.call_id
                )
                yield {index: call}
            elif isinstance(chunk, Failure):
                raise GeneratorFailure(chunk.code, chunk.message)

    return FunctionModel(stream_function=stream, model_name=name)


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(jsonable(arguments))


def _turns(messages: list[pa.ModelMessage], instructions: str | None) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    if instructions:
        turns.append(("user", instructions))
    for message in messages:
        role = "assistant" if isinstance(message, pa.ModelResponse) else "user"
        for part in message.parts:
            if isinstance(part, (pa.UserPromptPart, pa.SystemPromptPart)):
                content = part.content
                turns.append((role, content if isinstance(content, str) else str(content)))
            elif isinstance(part, pa.TextPart):
                turns.append((role, part.content))
            elif isinstance(part, pa.ToolCallPart):
                turns.append((role, tool_call_text(part.tool_name, part.args_as_dict())))
            elif isinstance(part, pa.BaseToolReturnPart):
                turns.append((role, tool_result_text(part.tool_name, part.model_response_str())))
            elif isinstance(part, pa.RetryFeedbackPart):
                turns.append((role, str(part.content)))
    return turns
