"""The built-in ``simulated`` model: deterministic words at a steady pace, no network."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator

import anyio
import msgspec

from broker.core.catalogue import SimulatedParams
from broker.core.events import Usage
from workers.providers.base import Chunk, Finish, GenerationRequest, Text

_WORDS = (
    "the a stream broker token event answer model reply resumes replays every device sees "
    "same words arrive in order once each after refresh nothing is lost while cancel stops "
    "generation quickly durable redis entry client server live tail fast small clear"
).split()


class SimulatedProvider:
    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        return self._generate(request, msgspec.convert(request.params, SimulatedParams))

    async def _generate(
        self, request: GenerationRequest, params: SimulatedParams
    ) -> AsyncIterator[Chunk]:
        # Same content and params, same answer: seeded from both.
        digest = hashlib.sha256(
            msgspec.json.encode(
                [request.content, params.tokens, params.reasoning_tokens, params.seed]
            )
        ).digest()
        rng = random.Random(digest)
        interval = params.interval_ms / 1000
        for channel, count in (("reasoning", params.reasoning_tokens), ("content", params.tokens)):
            for index in range(count):
                await anyio.sleep(interval)
                word = rng.choice(_WORDS)
                yield Text(word if index == 0 else " " + word, channel)  # type: ignore[arg-type]
        usage = Usage(
            input_tokens=len(request.content.split()),
            output_tokens=params.tokens + params.reasoning_tokens,
            reasoning_tokens=params.reasoning_tokens or None,
        )
        yield Finish("stop", usage)
