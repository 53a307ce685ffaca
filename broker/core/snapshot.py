"""The merged view of a conversation, folded from its stream.

Everything in the snapshot, the active run included, is derived from the entries up to
``last_event_id``, so a client that renders it and streams after that id sees each event once.
The same fold makes the message a finished run's webhook carries (``AnswerFold``).
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from broker.core.bodies import (
    DataPart,
    Part,
    ReasoningPart,
    Snapshot,
    SnapshotMessage,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from broker.core.entries import entry_from_redis
from broker.core.events import (
    TERMINAL_EVENTS,
    Data,
    Delta,
    Event,
    RunFailed,
    RunStarted,
    ToolCall,
    ToolResult,
    UserMessage,
    decode,
)
from broker.core.ids import ORIGIN
from broker.engine.conversations import Store


class _Text:
    """Consecutive text of one channel, gathered before it is joined once."""

    __slots__ = ("channel", "pieces")

    def __init__(self, channel: str, text: str) -> None:
        self.channel = channel
        self.pieces = [text]


class _Call:
    """A tool call: its argument pieces, until (and unless) the whole arguments arrive."""

    __slots__ = ("call_id", "name", "pieces", "arguments", "whole")

    def __init__(self, call_id: str, name: str) -> None:
        self.call_id = call_id
        self.name = name
        self.pieces: list[str] = []
        self.arguments: Any = None
        self.whole = False


class AnswerFold:
    """One assistant message, folded from its run's output events in stream order.

    Consecutive deltas of one channel make one text (or reasoning) part; a tool call is one
    part at the place of its first event, holding the whole arguments once they arrived and
    the argument text so far until then; results and data are a part each.
    """

    __slots__ = ("message", "_parts", "_calls")

    def __init__(self, message: SnapshotMessage) -> None:
        self.message = message
        self._parts: list[_Text | _Call | Part] = []
        self._calls: dict[str, _Call] = {}

    def add(self, event: Event) -> None:
        """Fold one event of the run; events of other kinds change nothing."""
        if isinstance(event, Delta):
            last = self._parts[-1] if self._parts else None
            if isinstance(last, _Text) and last.channel == event.channel:
                last.pieces.append(event.text)
            else:
                self._parts.append(_Text(event.channel, event.text))
        elif isinstance(event, ToolCall):
            call = self._calls.get(event.call_id)
            if call is None:
                call = self._calls[event.call_id] = _Call(event.call_id, event.name)
                self._parts.append(call)
            if event.arguments_delta is not UNSET:
                call.pieces.append(event.arguments_delta)
            if event.arguments is not UNSET:
                call.arguments = event.arguments
                call.whole = True
        elif isinstance(event, ToolResult):
            self._parts.append(ToolResultPart(event.call_id, event.result, event.is_error))
        elif isinstance(event, Data):
            self._parts.append(DataPart(event.name, event.value))
        elif isinstance(event, RunFailed):
            self.message.error = event.error  # so a later reader can say why it failed

    def result(self) -> SnapshotMessage:
        """The message with its text, reasoning and parts filled in."""
        parts: list[Part] = []
        content: list[str] = []
        reasoning: list[str] = []
        for part in self._parts:
            if isinstance(part, _Text):
                text = "".join(part.pieces)
                if part.channel == "reasoning":
                    reasoning.append(text)
                    parts.append(ReasoningPart(text))
                else:
                    content.append(text)
                    parts.append(TextPart(text))
            elif isinstance(part, _Call):
                arguments = part.arguments if part.whole else "".join(part.pieces)
                parts.append(ToolCallPart(part.call_id, part.name, arguments))
            else:
                parts.append(part)
        self.message.content = "".join(content)
        self.message.reasoning = "".join(reasoning)
        self.message.parts = parts
        return self.message


def user_message(event: UserMessage, status: str = "queued") -> SnapshotMessage:
    """A user message. Its status is its run's (``queued`` until a worker starts it, then
    ``running`` and the run's final one), so the prompt of a cancelled run says so too."""
    return SnapshotMessage(
        event.message_id,
        "user",
        event.content,
        "",
        event.run_id,
        status,
        [TextPart(event.content)],
    )


def assistant_message(message_id: str, run_id: str, status: str) -> SnapshotMessage:
    return SnapshotMessage(message_id, "assistant", "", "", run_id, status)


async def build_snapshot(store: Store, cid: str, batch: int) -> Snapshot | None:
    messages: list[SnapshotMessage] = []
    answers: dict[str, AnswerFold] = {}
    prompts: dict[str, SnapshotMessage] = {}
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
            if isinstance(event, UserMessage):
                prompt = prompts[event.run_id] = user_message(event)
                messages.append(prompt)
                open_runs[event.run_id] = None
            elif isinstance(event, RunStarted):
                if event.run_id in prompts:
                    prompts[event.run_id].status = "running"
                answer = AnswerFold(assistant_message(event.message_id, event.run_id, "running"))
                answers[event.run_id] = answer
                messages.append(answer.message)
            elif type(event) in TERMINAL_EVENTS:
                open_runs.pop(event.run_id, None)
                if event.run_id in prompts:
                    prompts[event.run_id].status = TERMINAL_EVENTS[type(event)]
                answer = answers.get(event.run_id)
                if answer is not None:
                    answer.message.status = TERMINAL_EVENTS[type(event)]
                    answer.add(event)
            else:
                answer = answers.get(event.run_id)
                if answer is not None:
                    answer.add(event)
        if len(raw) < batch:
            break
    if last_event_id is None:
        return None
    for answer in answers.values():
        answer.result()
    active = next(reversed(open_runs), None) if open_runs else None
    return Snapshot(cid, messages, active, last_event_id)
