"""Messages between the front tier and the workers: the job queue and the control channel."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """One run to generate; a worker takes it from the jobs stream through a consumer group."""

    conversation_id: str
    run_id: str
    message_id: str  # the user's message that asked for the run
    assistant_message_id: str
    model: str
    params: dict[str, Any] = {}
    content: str
    # Who asked (the token's subject, or the client's address): workers share their slots
    # fairly between subjects (``workers.slots``).
    subject: str = ""


class ControlMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Published on the control channel of the worker that owns the run (the cancel script
    names it); that worker stops the run."""

    action: Literal["cancel"]
    conversation_id: str
    run_id: str


job_encoder = msgspec.json.Encoder()
job_decoder = msgspec.json.Decoder(Job)
control_decoder = msgspec.json.Decoder(ControlMessage)
