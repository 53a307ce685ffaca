"""The merged view of a conversation, folded from its stream.

Everything in the snapshot, the active run included, is derived from the entries up to
``last_event_id``, so a client that renders it and streams after that id sees each event once.
"""

from __future__ import annotations

from broker.core.bodies import Snapshot, SnapshotMessage
from broker.core.entries import entry_from_redis
from broker.core.events import (
    TERMINAL_EVENTS,
    Delta,
    RunStarted,
    UserMessage,
    decode,
)
from broker.core.ids import ORIGIN
from broker.core.store import Store


class _Answer:
    __slots__ = ("message", "content", "reasoning")

    def __init__(self, message: SnapshotMessage) -> None:
        self.message = message
        self.content: list[str] = []
        self.reasoning: list[str] = []


async def build_snapshot(store: Store, cid: str, batch: int) -> Snapshot | None:
    messages: list[SnapshotMessage] = []
    answers: dict[str, _Answer] = {}
    # Runs asked for and not ended, in order. The run active before the scan counts too: its
    # `message` entry may have been trimmed away; if it ends during the scan, the scan says so.
    active_before = await store.active_run(cid)
    open_runs: dict[str, None] = {active_before: None} if active_before else {}
    position = ORIGIN
    last_event_id: str | None = None
    while True:
        raw = await store.read_after(cid, position, batch)
        for entry_id, fields in raw:
            position = entry_from_redis(entry_id, fields).pos
            last_event_id = entry_id.decode()
            event = decode(fields[b"t"].decode(), fields[b"d"])
            if isinstance(event, Delta):
                answer = answers.get(event.run_id)
                if answer is not None:
                    parts = answer.content if event.channel == "content" else answer.reasoning
                    parts.append(event.text)
            elif isinstance(event, UserMessage):
                messages.append(
                    SnapshotMessage(
                        event.message_id, "user", event.content, "", event.run_id, "completed"
                    )
                )
                open_runs[event.run_id] = None
            elif isinstance(event, RunStarted):
                message = SnapshotMessage(event.message_id, "assistant", "", "", event.run_id, "running")
                answers[event.run_id] = _Answer(message)
                messages.append(message)
            else:
                open_runs.pop(event.run_id, None)
                answer = answers.get(event.run_id)
                if answer is not None:
                    answer.message.status = TERMINAL_EVENTS[type(event)]
        if len(raw) < batch:
            break
    if last_event_id is None:
        return None
    for answer in answers.values():
        answer.message.content = "".join(answer.content)
        answer.message.reasoning = "".join(answer.reasoning)
    active = next(reversed(open_runs), None) if open_runs else None
    return Snapshot(cid, messages, active, last_event_id)
