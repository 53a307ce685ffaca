"""The conversation events: the ``data`` of every SSE event and of every stored stream entry.

Each event is encoded to JSON once, by whoever appends it; those bytes are stored in the
stream entry's ``d`` field and sent to every client as they are.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

Channel = Literal["content", "reasoning"]
RunStatus = Literal["queued", "running", "cancelling", "completed", "cancelled", "failed"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "cancelled", "failed"})


class ErrorInfo(msgspec.Struct, frozen=True):
    code: str
    message: str


class Usage(msgspec.Struct, frozen=True, omit_defaults=True):
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int | None = None


class UserMessage(msgspec.Struct, frozen=True):
    message_id: str
    content: str
    run_id: str
    role: Literal["user"] = "user"


class RunStarted(msgspec.Struct, frozen=True):
    run_id: str
    message_id: str  # the assistant message this run writes
    model: str


class Delta(msgspec.Struct, frozen=True):
    run_id: str
    text: str
    channel: Channel = "content"


class ToolCall(msgspec.Struct, frozen=True, omit_defaults=True):
    """A tool call the model (or the application's generator) makes; the broker never runs it.

    Streamed calls come as pieces, each with ``arguments_delta`` (the next piece of the
    arguments' JSON text), then once with ``arguments`` (the whole value, parsed); a call made
    whole has only that last event. Exactly one of the two fields is set.
    """

    run_id: str
    call_id: str
    name: str
    arguments_delta: str | UnsetType = UNSET
    arguments: Any | UnsetType = UNSET


class ToolResult(msgspec.Struct, frozen=True):
    """What a tool call gave back: any JSON value, or text; ``is_error`` when the tool failed."""

    run_id: str
    call_id: str
    result: Any
    is_error: bool = False


class Data(msgspec.Struct, frozen=True):
    """A named piece of structured output (citations, progress, UI state) for the client."""

    run_id: str
    name: str
    value: Any


class RunCompleted(msgspec.Struct, frozen=True, omit_defaults=True):
    run_id: str
    finish_reason: str
    usage: Usage | None = None


class RunCancelled(msgspec.Struct, frozen=True, omit_defaults=True):
    run_id: str
    reason: str | None = None


class RunFailed(msgspec.Struct, frozen=True):
    run_id: str
    error: ErrorInfo


class Reset(msgspec.Struct, frozen=True):
    """Sent, never stored, when a client's position was trimmed away or is not in the stream."""

    reason: str
    earliest_event_id: str | None


class StreamError(msgspec.Struct, frozen=True):
    """Sent, never stored, as the last frame of a stream the server ends; ``token_expired``: the
    token that opened it has expired, so the client resumes with a fresh one from its last id."""

    code: str
    message: str


Event = (
    UserMessage
    | RunStarted
    | Delta
    | ToolCall
    | ToolResult
    | Data
    | RunCompleted
    | RunCancelled
    | RunFailed
)

EVENT_TYPES: dict[str, type[Event]] = {
    "message": UserMessage,
    "run.started": RunStarted,
    "delta": Delta,
    "tool.call": ToolCall,
    "tool.result": ToolResult,
    "data": Data,
    "run.completed": RunCompleted,
    "run.cancelled": RunCancelled,
    "run.failed": RunFailed,
}
EVENT_NAMES: dict[type[Event], str] = {cls: name for name, cls in EVENT_TYPES.items()}
TERMINAL_EVENTS: dict[type[Event], str] = {
    RunCompleted: "completed",
    RunCancelled: "cancelled",
    RunFailed: "failed",
}

_encoder = msgspec.json.Encoder()
_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}


def encode(event: Event) -> tuple[str, bytes]:
    """Return the event's SSE name and its JSON bytes, the form in which it is stored."""
    return EVENT_NAMES[type(event)], _encoder.encode(event)


def decode(name: str, data: bytes) -> Event:
    return _decoders[name].decode(data)
