"""OpenAI Agents SDK agents, run durably: ``await stream_openai_agent(run, agent)``.

``Runner.run_streamed`` runs the agent in a task of its own; when the broker's run stops (a
cancel from any device, the run's time limit, a worker shutting down), that task is cancelled at
once (``cancel(mode="immediate")``) and awaited for a moment, so its open model stream is closed
and no later tool call starts. Its stream becomes the broker's events:

- ``response.output_text`` and refusal deltas: ``delta`` (content); reasoning summary and
  reasoning text deltas: ``delta`` (reasoning);
- function calls (handoffs included, which the SDK makes as ``transfer_to_<agent>`` calls):
  ``tool.call`` pieces as the arguments stream, then the whole call, under the model's
  ``call_id``; tool outputs and handoff outputs: ``tool.result`` (``is_error`` when the output is
  the SDK's default tool-failure text);
- a handoff: ``data`` named ``handoff`` (``{"from", "to"}``, the agents' names); structured
  output (an ``output_type``): ``data`` named ``output`` at the end;
- usage: ``run.completed`` (the Responses API has no finish reason: ``stop``).

Needs the ``openai-agents`` extra (``pip install "llm-stream-broker[openai-agents]"``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import anyio

from workers.integrations._common import (
    CLOSE_SECONDS,
    GUARDRAIL,
    LIMIT_EXCEEDED,
    MODEL_BEHAVIOR,
    MODEL_TIMEOUT,
    TOOL_ERROR,
    ToolCalls,
    failing,
    history,
    http_failure,
    jsonable,
    parse_arguments,
    require,
    usage,
)
from workers.providers.base import Failure, Message
from workers.run import Run

_EXTRA = "openai-agents"
require("agents", _EXTRA)

import openai  # noqa: E402
from agents import Agent, Runner, exceptions  # noqa: E402
from agents.items import HandoffOutputItem, ToolCallItem, ToolCallOutputItem  # noqa: E402
from agents.result import RunResultStreaming  # noqa: E402
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent  # noqa: E402
from agents.tool import default_tool_error_function  # noqa: E402

__all__ = ["openai_agents_history", "stream_openai_agent"]

_TEXT = ("response.output_text.delta", "response.refusal.delta")
_REASONING = ("response.reasoning_summary_text.delta", "response.reasoning_text.delta")
_FUNCTION_CALL = "function_call"


def openai_agents_history(messages: Sequence[Message]) -> list[dict[str, str]]:
    """The conversation's earlier turns as the SDK's input items."""
    return history(
        messages,
        lambda text: {"role": "user", "content": text},
        lambda text: {"role": "assistant", "content": text},
    )


async def stream_openai_agent(
    run: Run,
    agent: Agent[Any],
    *,
    input: str | list[Any] | None = None,
    **run_options: Any,
) -> RunResultStreaming:
    """Run ``agent`` on this run's prompt and history, its stream going out as events.

    ``input`` replaces the prompt and history when given; ``run_options`` go to
    ``Runner.run_streamed`` as they are (``context``, ``max_turns``, ``run_config``, ...). Sets
    ``run.usage``; returns the SDK's streamed result. Failures raise ``GeneratorFailure``.
    """
    if input is None:
        input = [*openai_agents_history(run.history), {"role": "user", "content": run.prompt}]
    tools = ToolCalls(run)
    mapper = _Mapper(run, tools)
    result = Runner.run_streamed(agent, input, **run_options)
    try:
        async with failing(_classify, tools, "OpenAI Agents"):
            async for event in result.stream_events():
                await mapper.event(event)
    finally:
        if not result.is_complete:
            await _stop(result)
    if not isinstance(result.final_output, str) and result.final_output is not None:
        await run.data("output", jsonable(result.final_output))
    counted = result.context_wrapper.usage
    details = getattr(counted, "output_tokens_details", None)
    run.usage = usage(
        counted.input_tokens, counted.output_tokens, getattr(details, "reasoning_tokens", None)
    )
    return result


async def _stop(result: RunResultStreaming) -> None:
    """Cancel the SDK's task and give it a moment to close what it has open."""
    result.cancel(mode="immediate")
    task = getattr(result, "run_loop_task", None)
    if task is None:
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SECONDS):
        await asyncio.wait([task])


class _Mapper:
    """The SDK's stream events, as the broker's events."""

    def __init__(self, run: Run, tools: ToolCalls) -> None:
        self._run = run
        self._tools = tools
        self._calls: dict[str, str] = {}  # the streamed item's id -> the call's call_id
        self._failed_text = default_tool_error_function(None, RuntimeError())  # type: ignore[arg-type]

    async def event(self, event: Any) -> None:
        if isinstance(event, RawResponsesStreamEvent):
            await self._raw(event.data)
        elif isinstance(event, RunItemStreamEvent):
            await self._item(event.name, event.item)
        # AgentUpdatedStreamEvent: a handoff says the same, as data.

    async def _raw(self, data: Any) -> None:
        kind = getattr(data, "type", "")
        if kind in _TEXT:
            await self._run.text(data.delta)
        elif kind in _REASONING:
            await self._run.reasoning(data.delta)
        elif kind == "response.output_item.added" and data.item.type == _FUNCTION_CALL:
            self._calls[data.item.id or data.item.call_id] = data.item.call_id
            await self._tools.piece(data.item.call_id, data.item.name, data.item.arguments or "")
        elif kind == "response.function_call_arguments.delta":
            call_id = self._calls.get(data.item_id)
            if call_id is not None:
                await self._tools.piece(call_id, "", data.delta)
        elif kind == "response.output_item.done" and data.item.type == _FUNCTION_CALL:
            await self._tools.whole(data.item.call_id, data.item.name, data.item.arguments)

    async def _item(self, name: str, item: Any) -> None:
        if isinstance(item, ToolCallItem):
            raw = item.raw_item
            call_id = _field(raw, "call_id") or _field(raw, "id")
            if call_id:
                arguments = _field(raw, "arguments")
                tool = _field(raw, "name") or _field(raw, "type") or "tool"
                await self._tools.whole(call_id, tool, arguments if arguments is not None else {})
        elif isinstance(item, ToolCallOutputItem):
            if item.call_id:
                failed = item.output == self._failed_text
                await self._tools.result(item.call_id, item.output, failed)
        elif name == "handoff_requested":
            raw = item.raw_item
            call_id = _field(raw, "call_id")
            if call_id:
                await self._tools.whole(call_id, _field(raw, "name"), _field(raw, "arguments"))
        elif isinstance(item, HandoffOutputItem):
            call_id = _field(item.raw_item, "call_id")
            if call_id:
                output = _field(item.raw_item, "output")
                parsed = parse_arguments(output) if isinstance(output, str) else output
                await self._tools.result(call_id, parsed)
            handoff = {"from": item.source_agent.name, "to": item.target_agent.name}
            await self._run.data("handoff", handoff)
        # Messages and reasoning items were streamed as deltas; MCP and tool search items are
        # the SDK's own bookkeeping.


def _field(raw: Any, name: str) -> Any:
    return raw.get(name) if isinstance(raw, dict) else getattr(raw, name, None)


def _classify(exc: Exception) -> Failure | None:
    if isinstance(exc, exceptions.MaxTurnsExceeded):
        return Failure(LIMIT_EXCEEDED, "the agent reached its maximum number of turns")
    if isinstance(
        exc,
        (
            exceptions.InputGuardrailTripwireTriggered,
            exceptions.OutputGuardrailTripwireTriggered,
            exceptions.ToolInputGuardrailTripwireTriggered,
            exceptions.ToolOutputGuardrailTripwireTriggered,
        ),
    ):
        return Failure(GUARDRAIL, "a guardrail of the agent stopped the run")
    if isinstance(exc, exceptions.ToolTimeoutError):
        return Failure(TOOL_ERROR, "a tool did not finish in time")
    if isinstance(exc, (exceptions.ModelBehaviorError, exceptions.ModelRefusalError)):
        return Failure(MODEL_BEHAVIOR, "the model's answer could not be used")
    if isinstance(exc, (exceptions.ModelTimeoutError, openai.APITimeoutError)):
        return Failure(MODEL_TIMEOUT, "the model did not answer in time")
    if isinstance(exc, openai.APIStatusError):
        return http_failure(exc.status_code)
    if isinstance(exc, openai.APIConnectionError):
        return http_failure(None)
    return None
