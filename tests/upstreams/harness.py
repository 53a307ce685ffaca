"""Providers wired to a fake upstream, and helpers to run them to the end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import httpx
import msgspec

from broker.core.catalogue import ModelSpec
from broker.core.settings import Settings
from workers.providers import build_provider
from workers.providers.base import (
    Chunk,
    Failure,
    Finish,
    GenerationRequest,
    Message,
    Provider,
    Text,
)

API_KEY = "sk-test-9f8e7d6c5b4a39281706"
KEY_VAR = "FAKE_UPSTREAM_API_KEY"
HISTORY = (Message("user", "Hi, I am Ada."), Message("assistant", "Hello Ada."))

# Short timeouts and backoff keep the failure tests quick; the streams never come near them.
FAST = Settings(
    provider_first_byte_timeout_seconds=5.0,
    provider_idle_timeout_seconds=5.0,
    provider_connect_retries=2,
    provider_retry_backoff_seconds=0.01,
)


def spec_for(kind: str, base_url: str, **fields: Any) -> ModelSpec:
    """A catalogue entry, converted as one read from the TOML file is."""
    raw = {
        "provider": kind,
        "model": "upstream-model",
        "base_url": base_url,
        "api_key_env": KEY_VAR,
        **fields,
    }
    return msgspec.convert(raw, ModelSpec)


@asynccontextmanager
async def provider(
    kind: str, base_url: str, *, settings: Settings = FAST, key: str | None = API_KEY, **fields: Any
) -> AsyncIterator[Provider]:
    """A provider of ``kind`` for the upstream at ``base_url``, with its own client."""
    async with httpx.AsyncClient(trust_env=False) as client:
        environ = {KEY_VAR: key} if key else {}
        yield build_provider(
            "test-model", spec_for(kind, base_url, **fields), settings, client, environ
        )


def request(content: str = "Greet me.", **params: Any) -> GenerationRequest:
    return GenerationRequest("test-model", content, params, HISTORY, "upstream-model")


async def run(p: Provider, req: GenerationRequest | None = None) -> list[Chunk]:
    async with aclosing(p.stream(req or request())) as chunks:  # type: ignore[type-var]
        return [chunk async for chunk in chunks]


def text(chunks: list[Chunk], channel: str = "content") -> str:
    return "".join(c.text for c in chunks if isinstance(c, Text) and c.channel == channel)


def ending(chunks: list[Chunk]) -> Finish | Failure:
    """The last chunk, checked to be the only Finish or Failure."""
    ends = [c for c in chunks if isinstance(c, (Finish, Failure))]
    assert len(ends) == 1 and ends[0] is chunks[-1], chunks
    return ends[0]
