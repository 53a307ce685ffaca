"""Ollama's native ``/api/chat``: newline-delimited JSON.

Each line is a chat response object; ``message.content`` is answer text, ``message.thinking``
reasoning (from thinking models, when the request sets ``think``, e.g. a catalogue
``body = { think = true }``). The line with ``"done": true`` ends the stream and carries
``done_reason`` and the token counts (``prompt_eval_count``, ``eval_count``); an ``error`` line
can come instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import msgspec

from broker.core.events import Usage
from workers.providers.base import Chunk, Finish, GenerationRequest, Text
from workers.providers.failures import STREAM_CUT, UPSTREAM_ERROR, UpstreamFailure
from workers.providers.remote import RemoteProvider, decode_chunk, without_none


class _Message(msgspec.Struct):
    content: str | None = None
    thinking: str | None = None


class _Line(msgspec.Struct):
    message: _Message | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    error: str | None = None


_decoder = msgspec.json.Decoder(_Line)


class OllamaProvider(RemoteProvider):
    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        params = self.params(request)
        options = without_none(
            {
                "temperature": params.temperature,
                "top_p": params.top_p,
                "num_predict": params.max_tokens,
            }
        )
        body = self.body(
            {
                "model": request.upstream_model,
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
                "stream": True,
                **({"options": options} if options else {}),
            }
        )
        # A plain Ollama needs no key; one behind an authenticating proxy takes a bearer token.
        auth = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        finish: Finish | None = None
        async with self.upstream.post(
            self.url("/api/chat"), headers=self.headers(auth), body=body, expect_sse=False
        ) as response:
            async with aclosing(response.ndjson()) as lines:
                async for raw in lines:
                    line = decode_chunk(_decoder, raw)
                    if line.error is not None:
                        raise UpstreamFailure(
                            UPSTREAM_ERROR, f"the upstream reported an error: {line.error}"
                        )
                    if line.message is not None:
                        if line.message.thinking:
                            yield Text(line.message.thinking, "reasoning")
                        if line.message.content:
                            yield Text(line.message.content)
                    if line.done:
                        usage = None
                        if line.prompt_eval_count is not None or line.eval_count is not None:
                            usage = Usage(line.prompt_eval_count or 0, line.eval_count or 0)
                        finish = Finish(line.done_reason or "stop", usage)
                        break
        if finish is None:
            raise UpstreamFailure(STREAM_CUT, 'the upstream stream ended before its "done" line')
        yield finish
