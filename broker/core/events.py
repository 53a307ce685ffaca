"""The conversation events: the ``data`` of every SSE event and of every stored stream entry.

Each event is encoded to JSON once, by whoever appends it; those bytes are stored in the
stream entry's ``d`` field and sent to every client as they are.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

Channel = Literal["content", "reasoning"]


class ErrorInfo(msgspec.Struct, frozen=True):
    code: str
    message: str


class Usage(msgspec.Struct, frozen=True, omit_defaults=True):
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int | None = None


class UserMessage(msgspec.Struct, frozen=True):
    """The user's message; its run (``run_id``) starts."""

    message_id: str
    content: str
    run_id: str
    role: Literal["user"] = "user"


class RunStarted(msgspec.Struct, frozen=True):
    """A worker began the answer ``message_id`` with ``model``."""

    run_id: str
    message_id: str  # the assistant message this run writes
    model: str


class Delta(msgspec.Struct, frozen=True):
    """A piece of the answer (``channel: content``) or of the reasoning (``reasoning``); one or
    more tokens, coalesced."""

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
    """The answer is complete: ``finish_reason``, and ``usage`` when known."""

    run_id: str
    finish_reason: str
    usage: Usage | None = None


class RunCancelled(msgspec.Struct, frozen=True, omit_defaults=True):
    """The run was stopped by a cancel; the partial answer stays."""

    run_id: str
    reason: str | None = None


class RunFailed(msgspec.Struct, frozen=True):
    """The run ended with an error (``error.code``, ``error.message``)."""

    run_id: str
    error: ErrorInfo


class Reset(msgspec.Struct, frozen=True):
    """Sent, never stored, first, when the position asked for was trimmed away (``trimmed``) or
    is no position of this conversation (``unknown_position``): drop what you have; the replay
    of everything retained follows."""

    reason: str
    earliest_event_id: str | None


class StreamEnd(msgspec.Struct, frozen=True):
    """The ``error`` event: sent, never stored, as the last frame of a stream the server ends.
    ``token_expired``: resume with a fresh token and the last id received;
    ``conversation_deleted``: the conversation was deleted, do not reconnect;
    ``conversation_not_found``: a stream that waited for a new conversation, which another
    subject created first."""

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


class RunState(StrEnum):
    """Where a run stands, as its record in Redis says: the ``status`` a client sees (its
    user message and its answer say the same), or ``orphaned`` for a run whose job a worker
    gave up waiting for, which can never start; ``missing`` is no record at all."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    ORPHANED = "orphaned"
    MISSING = "missing"


# The one definition of how a run ends: its terminal events and the final state of each; the
# names and states below are derived from it.
TERMINAL_EVENTS: dict[type[Event], RunState] = {
    RunCompleted: RunState.COMPLETED,
    RunCancelled: RunState.CANCELLED,
    RunFailed: RunState.FAILED,
}
TERMINAL_STATES: frozenset[RunState] = frozenset(TERMINAL_EVENTS.values())
TERMINAL_NAMES: frozenset[bytes] = frozenset(EVENT_NAMES[cls].encode() for cls in TERMINAL_EVENTS)

_encoder = msgspec.json.Encoder()
_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}


def encode(event: Event) -> tuple[str, bytes]:
    """Return the event's SSE name and its JSON bytes, the form in which it is stored."""
    return EVENT_NAMES[type(event)], _encoder.encode(event)


def decode(name: str, data: bytes) -> Event:
    return _decoders[name].decode(data)
