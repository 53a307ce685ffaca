"""OpenAI Responses API streaming.

``POST {base}/responses`` with ``stream: true`` answers typed SSE events: answer text in
``response.output_text.delta``, reasoning summaries in
``response.reasoning_summary_text.delta`` (raw reasoning, from servers that expose it, in
``response.reasoning_text.delta``), and exactly one of ``response.completed``,
``response.incomplete`` or ``response.failed`` at the end; an ``error`` event can come at any
time. Reasoning summaries appear only when the request asks for them, e.g. a catalogue
``body = { reasoning = { effort = "medium", summary = "auto" } }``. With ``tools`` in the
request, a call is an output item of type ``function_call`` (``response.output_item.added``
names it), its arguments stream as ``response.function_call_arguments.delta`` and are whole
in ``response.function_call_arguments.done``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec

from broker.core.catalogue import ToolSpec
from broker.core.events import Usage
from workers.providers.base import (
    Chunk,
    Finish,
    GenerationRequest,
    Text,
    ToolCallDelta,
    ToolCallWhole,
)
from workers.providers.failures import STREAM_CUT, UpstreamFailure, code_for_error_type
from workers.providers.remote import (
    RemoteProvider,
    decode_chunk,
    object_schema,
    tool_arguments,
    without_none,
)


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_details: _OutputDetails | None = None


class _Error(msgspec.Struct):
    code: str | None = None
    message: str = ""


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _Response(msgspec.Struct):
    status: str | None = None
    usage: _Usage | None = None
    error: _Error | None = None
    incomplete_details: _Incomplete | None = None


class _Item(msgspec.Struct):
    type: str = ""
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    item: _Item | None = None
    arguments: str | None = None
    # A string for every text delta; other delta events may carry other shapes.
    delta: Any = None
    item_id: str | None = None
    summary_index: int | None = None
    response: _Response | None = None
    # ``error`` events: the fields at the top level, or (some servers) under ``error``.
    code: str | None = None
    message: str | None = None
    error: _Error | None = None


_decoder = msgspec.json.Decoder(_Event)
_FINISH_REASONS = {"max_output_tokens": "length"}


def _tools_field(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": tool.name,
            **({"description": tool.description} if tool.description else {}),
            "parameters": object_schema(tool),
        }
        for tool in tools
    ]


def _usage(response: _Response | None) -> Usage | None:
    if response is None or response.usage is None:
        return None
    details = response.usage.output_tokens_details
    return Usage(
        response.usage.input_tokens,
        response.usage.output_tokens,
        details.reasoning_tokens if details is not None else None,
    )


class OpenAIResponsesProvider(RemoteProvider):
    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        params = self.params(request)
        body = self.body(
            {
                "model": request.upstream_model,
                "input": [{"role": m.role, "content": m.content} for m in request.messages],
                "stream": True,
                **without_none(
                    {
                        "temperature": params.temperature,
                        "top_p": params.top_p,
                        "max_output_tokens": params.max_tokens,
                        "tools": _tools_field(params.tools) if params.tools else None,
                    }
                ),
            }
        )
        auth = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        finish: Finish | None = None
        summary: tuple[str | None, int | None] | None = None
        # Function calls by item id: (call id, name); a call is made whole once.
        calls: dict[str, tuple[str, str]] = {}
        made: set[str] = set()
        async with self.upstream.post(
            self.url("/responses"), headers=self.headers(auth), body=body
        ) as response:
            async with aclosing(response.sse()) as events:
                async for raw in events:
                    event = decode_chunk(_decoder, raw.data)
                    kind = event.type or raw.event
                    text = event.delta if isinstance(event.delta, str) else ""
                    if kind in ("response.output_text.delta", "response.refusal.delta"):
                        if text:
                            yield Text(text)
                    elif kind == "response.reasoning_summary_text.delta":
                        part = (event.item_id, event.summary_index)
                        if summary is not None and part != summary and text:
                            text = "\n\n" + text  # keep summary parts apart, as the API's UI does
                        summary = part
                        if text:
                            yield Text(text, "reasoning")
                    elif kind == "response.reasoning_text.delta":
                        if text:
                            yield Text(text, "reasoning")
                    elif kind == "response.output_item.added":
                        item = event.item
                        if item is not None and item.type == "function_call" and item.id:
                            calls[item.id] = (item.call_id or item.id, item.name or "")
                    elif kind == "response.function_call_arguments.delta":
                        call = calls.get(event.item_id or "")
                        if call is not None and text:
                            yield ToolCallDelta(call[0], call[1], text)
                    elif kind in (
                        "response.function_call_arguments.done",
                        "response.output_item.done",
                    ):
                        item_id = event.item.id if event.item is not None else event.item_id
                        arguments = (
                            event.item.arguments if event.item is not None else event.arguments
                        )
                        call = calls.get(item_id or "")
                        if call is not None and item_id not in made:
                            made.add(item_id)  # type: ignore[arg-type]
                            yield ToolCallWhole(call[0], call[1], tool_arguments(arguments or ""))
                    elif kind == "response.completed":
                        finish = Finish("tool_calls" if made else "stop", _usage(event.response))
                        break
                    elif kind == "response.incomplete":
                        details = event.response.incomplete_details if event.response else None
                        reason = (
                            details.reason
                            if details is not None and details.reason
                            else "incomplete"
                        )
                        finish = Finish(_FINISH_REASONS.get(reason, reason), _usage(event.response))
                        break
                    elif kind == "response.failed":
                        error = event.response.error if event.response else None
                        raise UpstreamFailure(
                            code_for_error_type(error.code if error else None),
                            f"the upstream response failed: {error.message if error else 'no detail'}",
                        )
                    elif kind == "error":
                        code = event.code or (event.error.code if event.error else None)
                        message = event.message or (event.error.message if event.error else "")
                        raise UpstreamFailure(
                            code_for_error_type(code), f"the upstream reported an error: {message}"
                        )
        if finish is None:
            raise UpstreamFailure(STREAM_CUT, "the upstream stream ended before response.completed")
        yield finish
