"""HTTP request and response bodies of API version 1."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from broker.core.events import ErrorInfo
from broker.core.models import DEFAULT_MODEL


class PostMessage(msgspec.Struct, frozen=True):
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


class SnapshotMessage(msgspec.Struct):
    message_id: str
    role: str
    content: str
    reasoning: str
    run_id: str
    status: str


class Snapshot(msgspec.Struct):
    conversation_id: str
    messages: list[SnapshotMessage]
    active_run_id: str | None
    last_event_id: str | None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorInfo
