"""Google Gemini ``streamGenerateContent`` with ``alt=sse``.

``POST {base}/models/{model}:streamGenerateContent?alt=sse`` answers SSE ``data:`` lines, each a
whole ``GenerateContentResponse``; parts flagged ``thought: true`` are reasoning (sent only when
the request sets ``generationConfig.thinkingConfig.includeThoughts``). There is no end marker:
the chunk carrying a candidate's ``finishReason`` (with the final ``usageMetadata``) is the end,
so a body that closes before one was cut. The key goes in the ``x-goog-api-key`` header, never in
the URL, so it cannot surface in a logged URL. With ``tools`` in the request (as
``functionDeclarations``), a call arrives whole as a ``functionCall`` part; an answer that made
calls and stopped ends with ``tool_calls``. An error after the stream began comes as a bare
JSON ``{"error": ...}`` between the events (Google's own SDK reads it so): it is reported as
that error, not as a cut stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import msgspec

from broker.core.events import Usage
from workers.providers.base import Chunk, Finish, GenerationRequest, Text, ToolCallWhole
from workers.providers.failures import (
    STREAM_CUT,
    UpstreamFailure,
    code_for_error_type,
    code_for_status,
)
from workers.providers.framing import SseDecoder
from workers.providers.remote import RemoteProvider, decode_chunk, object_schema, without_none


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: Any = None
    id: str | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool = False
    function_call: _FunctionCall | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int | None = None


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _Error(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str | None = None


class _Chunk(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    usage_metadata: _UsageMetadata | None = None
    prompt_feedback: _PromptFeedback | None = None
    error: _Error | None = None


_decoder = msgspec.json.Decoder(_Chunk)
_FINISH_REASONS = MappingProxyType({"STOP": "stop", "MAX_TOKENS": "length"})
_ROLES = MappingProxyType({"user": "user", "assistant": "model"})


def _failure(error: _Error) -> UpstreamFailure:
    code = code_for_status(error.code) if error.code else code_for_error_type(error.status)
    return UpstreamFailure(code, f"the upstream reported an error: {error.message}")


def _stray_error(lines: list[str]) -> _Error | None:
    """The error object among the lines that were no SSE event, if they hold one."""
    try:
        found: Any = msgspec.json.decode("\n".join(lines))
    except msgspec.DecodeError:
        return None
    if isinstance(found, list) and found:
        found = found[0]
    try:
        return msgspec.convert(found, _Chunk).error if isinstance(found, dict) else None
    except msgspec.ValidationError:
        return None


def _usage(metadata: _UsageMetadata | None) -> Usage | None:
    if metadata is None:
        return None
    thoughts = metadata.thoughts_token_count
    # Like the other vendors' output counts, thinking tokens are part of the output.
    return Usage(
        metadata.prompt_token_count, metadata.candidates_token_count + (thoughts or 0), thoughts
    )


class GeminiProvider(RemoteProvider):
    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        params = self.params(request)
        generation = without_none(
            {
                "temperature": params.temperature,
                "topP": params.top_p,
                "maxOutputTokens": params.max_tokens,
            }
        )
        body = self.body(
            {
                "contents": [
                    {"role": _ROLES[m.role], "parts": [{"text": m.content}]}
                    for m in request.messages
                ],
                **({"generationConfig": generation} if generation else {}),
                **(
                    {
                        "tools": [
                            {
                                "functionDeclarations": [
                                    {
                                        "name": tool.name,
                                        **(
                                            {"description": tool.description}
                                            if tool.description
                                            else {}
                                        ),
                                        "parameters": object_schema(tool),
                                    }
                                    for tool in params.tools
                                ]
                            }
                        ]
                    }
                    if params.tools
                    else {}
                ),
            }
        )
        auth = {"x-goog-api-key": self.api_key} if self.api_key else {}
        model = quote(request.upstream_model.removeprefix("models/"), safe="")
        url = self.url(f"/models/{model}:streamGenerateContent?alt=sse")
        finish: Finish | None = None
        calls = 0
        decoder = SseDecoder()
        async with self.upstream.post(url, headers=self.headers(auth), body=body) as response:
            async with aclosing(response.sse(decoder)) as events:
                async for raw in events:
                    chunk = decode_chunk(_decoder, raw.data)
                    if chunk.error is not None:
                        raise _failure(chunk.error)
                    candidate = chunk.candidates[0] if chunk.candidates else None
                    if candidate is not None and candidate.content is not None:
                        for part in candidate.content.parts:
                            if part.text:
                                yield Text(part.text, "reasoning" if part.thought else "content")
                            if part.function_call is not None:
                                call = part.function_call
                                calls += 1
                                yield ToolCallWhole(
                                    call.id or f"call_{calls}",
                                    call.name,
                                    call.args if call.args is not None else {},
                                )
                    if candidate is not None and candidate.finish_reason:
                        reason = _FINISH_REASONS.get(
                            candidate.finish_reason, candidate.finish_reason.lower()
                        )
                        if calls and reason == "stop":
                            reason = "tool_calls"
                        finish = Finish(reason, _usage(chunk.usage_metadata))
                        break
                    if chunk.prompt_feedback is not None and chunk.prompt_feedback.block_reason:
                        # The prompt itself was refused: an answer that ends before it began.
                        finish = Finish("content_filter", _usage(chunk.usage_metadata))
                        break
        if finish is None:
            error = _stray_error(decoder.stray) if decoder.stray else None
            if error is not None:
                raise _failure(error)
            raise UpstreamFailure(STREAM_CUT, "the upstream stream ended before a finishReason")
        yield finish
