"""The merged view of a conversation, folded from its stream.

Everything in the snapshot, the active run included, is derived from the entries up to
``last_event_id`` (the engine reads them, ``SnapshotFold`` folds them), so a client that
renders it and streams after that id sees each event once. The same fold makes the message a
finished run's webhook carries (``AnswerFold``).
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
from broker.core.entries import Entry, entry_event, entry_id
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
)


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


class SnapshotFold:
    """A conversation's snapshot, folded from its entries in stream order.

    ``active_before`` is the run the conversation named active before its entries were read:
    its ``message`` entry may have been trimmed away; if it ends during the read, the entries
    say so.
    """

    def __init__(self, cid: str, active_before: str | None) -> None:
        self._cid = cid
        self._messages: list[SnapshotMessage] = []
        self._answers: dict[str, AnswerFold] = {}
        self._prompts: dict[str, SnapshotMessage] = {}
        # Runs asked for and not ended, in order.
        self._open_runs: dict[str, None] = {active_before: None} if active_before else {}
        self._last: Entry | None = None

    def add(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._last = entry
            event = entry_event(entry)
            if isinstance(event, UserMessage):
                prompt = self._prompts[event.run_id] = user_message(event)
                self._messages.append(prompt)
                self._open_runs[event.run_id] = None
            elif isinstance(event, RunStarted):
                if event.run_id in self._prompts:
                    self._prompts[event.run_id].status = "running"
                answer = AnswerFold(assistant_message(event.message_id, event.run_id, "running"))
                self._answers[event.run_id] = answer
                self._messages.append(answer.message)
            elif type(event) in TERMINAL_EVENTS:
                final = TERMINAL_EVENTS[type(event)]
                self._open_runs.pop(event.run_id, None)
                if event.run_id in self._prompts:
                    self._prompts[event.run_id].status = final
                answer = self._answers.get(event.run_id)
                if answer is not None:
                    answer.message.status = final
                    answer.add(event)
            else:
                answer = self._answers.get(event.run_id)
                if answer is not None:
                    answer.add(event)

    def result(self) -> Snapshot | None:
        """The snapshot; None when there was no entry at all (no such conversation)."""
        if self._last is None:
            return None
        for answer in self._answers.values():
            answer.result()
        active = next(reversed(self._open_runs), None) if self._open_runs else None
        return Snapshot(self._cid, self._messages, active, entry_id(self._last))
