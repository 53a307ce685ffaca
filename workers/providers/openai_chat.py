"""OpenAI-compatible Chat Completions streaming (OpenAI, vLLM, Ollama's /v1, LM Studio,
llama.cpp server, DeepSeek).

``POST {base}/chat/completions`` with ``stream: true`` answers SSE ``data:`` lines of
``chat.completion.chunk`` objects and ends with ``data: [DONE]``. Reasoning arrives as
``delta.reasoning_content`` (DeepSeek, llama.cpp) or ``delta.reasoning`` (vLLM, Ollama,
OpenRouter); usage comes in a last chunk with empty ``choices`` when
``stream_options.include_usage`` is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import msgspec

from broker.core.events import Usage
from workers.providers.base import Chunk, Finish, GenerationRequest, Text
from workers.providers.failures import STREAM_CUT, UpstreamFailure, code_for_error_type
from workers.providers.remote import RemoteProvider, decode_chunk, without_none


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


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


class OpenAIChatProvider(RemoteProvider):
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
                        "max_tokens": params.max_tokens,
                    }
                ),
            }
        )
        auth = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        finish: str | None = None
        usage: Usage | None = None
        done = False
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
                        if choice.finish_reason:
                            finish = choice.finish_reason
                    if chunk.usage is not None:
                        details = chunk.usage.completion_tokens_details
                        usage = Usage(
                            chunk.usage.prompt_tokens,
                            chunk.usage.completion_tokens,
                            details.reasoning_tokens if details is not None else None,
                        )
        if not done and finish is None:
            raise UpstreamFailure(STREAM_CUT, "the upstream stream ended before its end marker")
        yield Finish(finish or "stop", usage)
