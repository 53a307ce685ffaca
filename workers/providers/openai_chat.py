"""OpenAI-compatible Chat Completions streaming (OpenAI, vLLM, Ollama's /v1, LM Studio,
llama.cpp server, DeepSeek).

``POST {base}/chat/completions`` with ``stream: true`` answers SSE ``data:`` lines of
``chat.completion.chunk`` objects and ends with ``data: [DONE]``. Reasoning arrives as
``delta.reasoning_content`` (DeepSeek, llama.cpp) or ``delta.reasoning`` (vLLM, Ollama,
OpenRouter); usage comes in a last chunk with empty ``choices`` when
``stream_options.include_usage`` is set. With ``tools`` in the request, a call streams as
``delta.tool_calls`` pieces keyed by ``index`` (the first carries ``id`` and ``function.name``,
the rest pieces of ``function.arguments``), and the answer ends with ``tool_calls``.
"""

from __future__ import annotations

import re
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


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_tokens_details: _CompletionDetails | None = None


class _Error(msgspec.Struct):
    message: str = ""
    type: str | None = None
    code: str | int | None = None


class _ChatChunk(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: _Error | None = None


_decoder = msgspec.json.Decoder(_ChatChunk)


def tools_field(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                **({"description": tool.description} if tool.description else {}),
                "parameters": object_schema(tool),
            },
        }
        for tool in tools
    ]


class _Calls:
    """The tool calls of one answer, gathered by index until the answer finishes."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}

    def piece(self, call: _ToolCall) -> ToolCallDelta | None:
        known = self._calls.get(call.index)
        if known is None:
            name = call.function.name if call.function and call.function.name else ""
            known = self._calls[call.index] = (call.id or f"call_{call.index}", name, [])
        arguments = call.function.arguments if call.function else None
        if not arguments:
            return None
        known[2].append(arguments)
        return ToolCallDelta(known[0], known[1], arguments)

    def whole(self) -> list[ToolCallWhole]:
        calls = [
            ToolCallWhole(call_id, name, tool_arguments("".join(pieces)))
            for _, (call_id, name, pieces) in sorted(self._calls.items())
        ]
        self._calls.clear()
        return calls


# OpenAI's reasoning models refuse ``max_tokens`` (400 unsupported_parameter); a routed name
# such as ``openai/o3`` counts by its last part.
_REASONING_MODEL = re.compile(r"(o\d+|gpt-5)([-.:].*)?", re.IGNORECASE)


class OpenAIChatProvider(RemoteProvider):
    def _max_tokens_field(self, model: str) -> str:
        if self.spec.max_tokens_field:
            return self.spec.max_tokens_field
        name = model.rpartition("/")[2]
        return "max_completion_tokens" if _REASONING_MODEL.fullmatch(name) else "max_tokens"

    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        params = self.params(request)
        body = self.body(
            {
                "model": request.upstream_model,
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
                "stream": True,
                "stream_options": {"include_usage": True},
                **without_none(
                    {
                        "temperature": params.temperature,
                        "top_p": params.top_p,
                        self._max_tokens_field(request.upstream_model): params.max_tokens,
                        "tools": tools_field(params.tools) if params.tools else None,
                    }
                ),
            }
        )
        auth = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        finish: str | None = None
        usage: Usage | None = None
        done = False
        calls = _Calls()
        async with self.upstream.post(
            self.url("/chat/completions"), headers=self.headers(auth), body=body
        ) as response:
            async with aclosing(response.sse()) as events:
                async for event in events:
                    if event.data.strip() == "[DONE]":
                        done = True
                        break
                    chunk = decode_chunk(_decoder, event.data)
                    if chunk.error is not None:
                        kind = chunk.error.type or (
                            str(chunk.error.code) if chunk.error.code is not None else None
                        )
                        raise UpstreamFailure(
                            code_for_error_type(kind),
                            f"the upstream reported an error: {chunk.error.message}",
                        )
                    for choice in chunk.choices:
                        if choice.index != 0:
                            continue
                        delta = choice.delta
                        if delta is not None:
                            reasoning = delta.reasoning_content or delta.reasoning
                            if reasoning:
                                yield Text(reasoning, "reasoning")
                            if delta.content:
                                yield Text(delta.content)
                            for call in delta.tool_calls or ():
                                piece = calls.piece(call)
                                if piece is not None:
                                    yield piece
                        if choice.finish_reason:
                            finish = choice.finish_reason
                            for whole in calls.whole():
                                yield whole
                    if chunk.usage is not None:
                        details = chunk.usage.completion_tokens_details
                        usage = Usage(
                            chunk.usage.prompt_tokens,
                            chunk.usage.completion_tokens,
                            details.reasoning_tokens if details is not None else None,
                        )
        if not done and finish is None:
            raise UpstreamFailure(STREAM_CUT, "the upstream stream ended before its end marker")
        for whole in calls.whole():  # a server that sent [DONE] without a finish_reason
            yield whole
        yield Finish(finish or "stop", usage)
