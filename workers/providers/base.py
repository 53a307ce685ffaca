"""What every model provider produces: a stream of normalized chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.events import Channel, Usage


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    channel: Channel = "content"


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str


Chunk = Text | Finish | Failure


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    content: str
    params: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield chunks until the answer ends; closing the iterator abandons the upstream call."""
        ...
