"""Anthropic Messages streaming.

``POST {base}/v1/messages`` with ``stream: true`` answers named SSE events: ``message_start``
(input usage), ``content_block_start``/``content_block_delta``/``content_block_stop`` per block
(``text_delta`` for the answer, ``thinking_delta`` for extended thinking), ``message_delta``
(stop reason and cumulative output usage), ``message_stop`` at the end, ``ping`` at any time and
``error`` (e.g. ``overloaded_error``) mid-stream. Thinking appears only when asked for, e.g. a
catalogue ``body = { thinking = { type = "enabled", budget_tokens = 2048 } }``. With ``tools``
in the request, a call is a ``tool_use`` block: its ``content_block_start`` names it, its
input streams as ``input_json_delta`` pieces, its ``content_block_stop`` ends it, and the
answer stops with ``tool_use`` (given to clients as ``tool_calls``, OpenAI's word for it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from types import MappingProxyType
from typing import Any

import msgspec

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

API_VERSION = "2023-06-01"


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Message(msgspec.Struct):
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Block(msgspec.Struct):
    type: str = ""
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Error(msgspec.Struct):
    type: str = ""
    message: str = ""


class _Event(msgspec.Struct):
    type: str = ""
    index: int | None = None
    content_block: _Block | None = None
    message: _Message | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_decoder = msgspec.json.Decoder(_Event)
_FINISH_REASONS = MappingProxyType(
    {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
)


def _input_tokens(usage: _Usage) -> int | None:
    if usage.input_tokens is None:
        return None
    return (
        usage.input_tokens
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


class AnthropicProvider(RemoteProvider):
    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        params = self.params(request)
        body = self.body(
            {
                "model": request.upstream_model,
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
                "max_tokens": params.max_tokens or self.spec.max_tokens,
                "stream": True,
                **without_none(
                    {
                        "temperature": params.temperature,
                        "top_p": params.top_p,
                        "tools": [
                            {
                                "name": tool.name,
                                **({"description": tool.description} if tool.description else {}),
                                "input_schema": object_schema(tool),
                            }
                            for tool in params.tools
                        ]
                        if params.tools
                        else None,
                    }
                ),
            }
        )
        auth = {"anthropic-version": API_VERSION}
        if self.api_key:
            auth["x-api-key"] = self.api_key
        input_tokens: int | None = None
        output_tokens: int | None = None
        stop_reason: str | None = None
        finished = False
        # Open tool_use blocks by index: (id, name, input pieces).
        calls: dict[int, tuple[str, str, list[str]]] = {}
        async with self.upstream.post(
            self.url("/v1/messages"), headers=self.headers(auth), body=body
        ) as response:
            async with aclosing(response.sse()) as events:
                async for raw in events:
                    event = decode_chunk(_decoder, raw.data)
                    kind = event.type or raw.event
                    if kind == "content_block_delta" and event.delta is not None:
                        if event.delta.type == "text_delta" and event.delta.text:
                            yield Text(event.delta.text)
                        elif event.delta.type == "thinking_delta" and event.delta.thinking:
                            yield Text(event.delta.thinking, "reasoning")
                        elif event.delta.type == "input_json_delta" and event.delta.partial_json:
                            call = calls.get(event.index if event.index is not None else -1)
                            if call is not None:
                                call[2].append(event.delta.partial_json)
                                yield ToolCallDelta(call[0], call[1], event.delta.partial_json)
                    elif kind == "content_block_start" and event.content_block is not None:
                        block = event.content_block
                        if block.type == "tool_use" and event.index is not None:
                            call_id = block.id or f"call_{event.index}"
                            calls[event.index] = (call_id, block.name or "", [])
                    elif kind == "content_block_stop" and event.index in calls:
                        call_id, name, pieces = calls.pop(event.index)  # type: ignore[arg-type]
                        yield ToolCallWhole(call_id, name, tool_arguments("".join(pieces)))
                    elif kind == "message_start" and event.message and event.message.usage:
                        input_tokens = _input_tokens(event.message.usage)
                        output_tokens = event.message.usage.output_tokens
                    elif kind == "message_delta":
                        if event.delta is not None and event.delta.stop_reason:
                            stop_reason = event.delta.stop_reason
                        if event.usage is not None:
                            if event.usage.output_tokens is not None:
                                output_tokens = event.usage.output_tokens
                            if event.usage.input_tokens is not None:
                                input_tokens = _input_tokens(event.usage)
                    elif kind == "message_stop":
                        finished = True
                        break
                    elif kind == "error":
                        error = event.error or _Error()
                        raise UpstreamFailure(
                            code_for_error_type(error.type),
                            f"the upstream reported {error.type or 'an error'}: {error.message}",
                        )
        if not finished:
            raise UpstreamFailure(STREAM_CUT, "the upstream stream ended before message_stop")
        usage = None
        if input_tokens is not None or output_tokens is not None:
            usage = Usage(input_tokens or 0, output_tokens or 0)
        reason = stop_reason or "stop"
        yield Finish(_FINISH_REASONS.get(reason, reason), usage)
