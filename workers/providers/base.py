"""What every model provider produces: a stream of normalized chunks.

Whatever the upstream's wire format, a provider yields ``Text`` on the ``content`` or
``reasoning`` channel and ends with exactly one ``Finish`` or ``Failure``; the rest of the
worker never sees a vendor's shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from broker.core.events import Channel, Usage

Role = Literal["user", "assistant"]


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


@dataclass(frozen=True, slots=True)
class Message:
    """One earlier turn of the conversation, as context for the model."""

    role: Role
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """One run's input: the new prompt, the turns before it, and what to ask upstream.

    ``model`` is the name the client sent; ``upstream_model`` the name the provider's API
    knows it by (from the catalogue).
    """

    model: str
    content: str
    params: dict[str, Any] = field(default_factory=dict)
    history: tuple[Message, ...] = ()
    upstream_model: str = ""

    @property
    def messages(self) -> list[Message]:
        """The whole conversation to send: the earlier turns, then the new prompt."""
        return [*self.history, Message("user", self.content)]


class Provider(Protocol):
    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield chunks until the answer ends; closing the iterator abandons the upstream call."""
        ...
