"""HTTP request and response bodies of API version 1."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from broker.core.catalogue import DEFAULT_MODEL
from broker.core.events import ErrorInfo


class PostMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Unknown fields are refused, here as in ``params``: a misspelt ``modle`` would otherwise
    be dropped without a word and the default model answer."""

    content: Annotated[str, msgspec.Meta(min_length=1)]
    model: str = DEFAULT_MODEL
    params: dict[str, Any] = {}


class MessageAccepted(msgspec.Struct, frozen=True):
    conversation_id: str
    message_id: str
    run_id: str
    event_id: str


class CancelState(msgspec.Struct, frozen=True, omit_defaults=True):
    run_id: str
    status: str
    event_id: str | None = None


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ReasoningPart(msgspec.Struct, tag="reasoning", tag_field="type"):
    text: str


class ToolCallPart(msgspec.Struct, tag="tool_call", tag_field="type"):
    call_id: str
    name: str
    # The whole arguments once the call was complete; until then the argument text so far.
    arguments: Any


class ToolResultPart(msgspec.Struct, tag="tool_result", tag_field="type"):
    call_id: str
    result: Any
    is_error: bool


class DataPart(msgspec.Struct, tag="data", tag_field="type"):
    name: str
    value: Any


Part = TextPart | ReasoningPart | ToolCallPart | ToolResultPart | DataPart


# A message's status is its run's: a user message and its answer say the same.
MessageStatus = Literal["queued", "running", "completed", "cancelled", "failed"]


class SnapshotMessage(msgspec.Struct):
    """One message, merged from its events.

    ``content`` and ``reasoning`` are the whole text of each channel; ``parts`` is everything
    in the order it arrived (a user message is one text part). ``error`` says why a failed
    answer failed (its ``run.failed`` error), so a page loaded later can say so; else null.
    """

    message_id: str
    role: str
    content: str
    reasoning: str
    run_id: str
    status: MessageStatus
    parts: list[Part] = []
    error: ErrorInfo | None = None


class Snapshot(msgspec.Struct):
    conversation_id: str
    messages: list[SnapshotMessage]
    active_run_id: str | None
    last_event_id: str | None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorInfo


class ModelName(msgspec.Struct, frozen=True):
    name: str


class ModelList(msgspec.Struct, frozen=True):
    """The catalogue as clients may see it: names only, never keys, URLs or headers."""

    default: str
    models: list[ModelName]


class ConversationSummary(msgspec.Struct, frozen=True):
    """One conversation in its owner's list. ``last_activity_at`` is the time of its latest
    message (Unix milliseconds, like ``created_at``): the list's order."""

    conversation_id: str
    title: str
    created_at: int
    last_activity_at: int
    active_run_id: str | None


class ConversationPage(msgspec.Struct, frozen=True):
    """A page of the list, newest activity first; ``next_cursor`` fetches the next (null: none)."""

    conversations: list[ConversationSummary]
    next_cursor: str | None
