"""What every model provider produces: a stream of normalized chunks.

Whatever the upstream's wire format, a provider yields ``Text`` on the ``content`` or
``reasoning`` channel, tool calls the model makes (``ToolCallDelta`` pieces of a call's
argument text, then ``ToolCallWhole`` once the call is complete), and ends with exactly one
``Finish`` or ``Failure``; the rest of the worker never sees a vendor's shapes. An
application's generator emits the same chunks, plus ``ToolOutput`` and ``DataValue``, so both
go through one relay to Redis.
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
class ToolCallDelta:
    """The next piece of a tool call's arguments, as JSON text."""

    call_id: str
    name: str
    arguments_delta: str


@dataclass(frozen=True, slots=True)
class ToolCallWhole:
    """A complete tool call: its arguments parsed (the raw text when it was not JSON)."""

    call_id: str
    name: str
    arguments: Any


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """What a tool call gave back (a generator ran the tool; the broker never does)."""

    call_id: str
    result: Any
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class DataValue:
    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str


# What a model's stream carries before its end; what a generator may emit besides.
Output = Text | ToolCallDelta | ToolCallWhole | ToolOutput | DataValue
Chunk = Output | Finish | Failure


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
