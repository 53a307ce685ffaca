"""The conversation events: the ``data`` of every SSE event and of every stored stream entry.

Each event is encoded to JSON once, by whoever appends it; those bytes are stored in the
stream entry's ``d`` field and sent to every client as they are.
"""

from __future__ import annotations

from typing import Literal

import msgspec

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


Event = UserMessage | RunStarted | Delta | RunCompleted | RunCancelled | RunFailed

EVENT_TYPES: dict[str, type[Event]] = {
    "message": UserMessage,
    "run.started": RunStarted,
    "delta": Delta,
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
