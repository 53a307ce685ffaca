"""A finished run, for whatever copies runs elsewhere: the outbox notice that names it, and the
run as read back from its conversation (the webhook's body and the tap are made from it).

A run's terminal event is written by a script over its conversation's keys, all in one Redis
Cluster slot, so that script cannot also write a global stream. Instead, whoever ended the run
adds a ``RunEnded`` notice to the outbox stream before it acknowledges the run's job; a job
whose run is already final when a worker takes it (its worker died after the terminal event,
or the run was cancelled while queued) gets its notice from that worker. So every finished
run has a notice, at the cost of one write per run; a crash at the wrong moment can make it
two, never none.

Consumers read the outbox through consumer groups: ``webhook`` (the workers' dispatcher) and
``tap:<name>`` (``broker tap``). A notice only names the run: its events are read from the
conversation stream, from the run's user message through its terminal event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from broker.core.entries import Entry

WEBHOOK_GROUP = "webhook"
_TAP_GROUP = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class RunEnded(msgspec.Struct, frozen=True):
    """The outbox entry's ``n`` field."""

    conversation_id: str
    run_id: str
    status: str


notice_encoder = msgspec.json.Encoder()
notice_decoder = msgspec.json.Decoder(RunEnded)


def tap_group(name: str) -> str:
    """The consumer group of the tap called ``name``; never the webhook's."""
    if not _TAP_GROUP.fullmatch(name):
        raise ValueError("a tap group name is 1 to 64 of A-Z a-z 0-9 _ . : -")
    return f"tap:{name}"


@dataclass(frozen=True)
class FinishedRun:
    """A finished run as stored: what its record says, and its entries in stream order."""

    conversation_id: str
    run_id: str
    status: str
    model: str
    assistant_message_id: str
    terminal_event_id: str
    entries: list[Entry]
    # False when retention trimmed the run's first entries before they were read.
    complete: bool
