"""The AI SDK's UI message stream, written from a conversation's events.

The Vercel AI SDK (``ai`` 5, 6 and 7) reads an answer as Server-Sent Events whose data are JSON
chunks (``start``, ``text-delta``, ``finish``, ...) ended by ``data: [DONE]``, and rebuilds the
assistant message from them. ``RunChunks`` maps the events of one run to those chunks. It is a
pure function of the stored events, so a replay gives exactly the bytes of the first delivery:
the message id is the run's assistant message id (from ``run.started``) and each part's id is
the run's id and the part's index in the message. ``ui_messages`` folds a whole conversation
into the ``UIMessage`` list the SDK would have built from the same chunks.

Only what the three major versions all accept goes on the wire: a ``finish`` without a reason
for a cancelled run (``interrupted`` exists in ai 7 only), finish reasons from their common set.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from broker.core.catalogue import DEFAULT_MODEL
from broker.core.entries import Entry, entry_event
from broker.core.errors import INVALID_FIELD, ApiError
from broker.core.events import (
    Data,
    Delta,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    ToolCall,
    ToolResult,
    UserMessage,
)

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"x-vercel-ai-ui-message-stream", b"v1"),
]
DONE = b"data: [DONE]\n\n"

# The broker's finish reasons are OpenAI's words; the SDK's are its own.
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "content_filter": "content-filter",
}


class _Chunk(msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True):
    pass


class StartChunk(_Chunk, tag="start"):
    message_id: str


class StartStepChunk(_Chunk, tag="start-step"):
    pass


class FinishStepChunk(_Chunk, tag="finish-step"):
    pass


class TextStartChunk(_Chunk, tag="text-start"):
    id: str


class TextDeltaChunk(_Chunk, tag="text-delta"):
    id: str
    delta: str


class TextEndChunk(_Chunk, tag="text-end"):
    id: str


class ReasoningStartChunk(_Chunk, tag="reasoning-start"):
    id: str


class ReasoningDeltaChunk(_Chunk, tag="reasoning-delta"):
    id: str
    delta: str


class ReasoningEndChunk(_Chunk, tag="reasoning-end"):
    id: str


class ToolInputStartChunk(_Chunk, tag="tool-input-start"):
    tool_call_id: str
    tool_name: str


class ToolInputDeltaChunk(_Chunk, tag="tool-input-delta"):
    tool_call_id: str
    input_text_delta: str


class ToolInputAvailableChunk(_Chunk, tag="tool-input-available"):
    tool_call_id: str
    tool_name: str
    input: Any


class ToolOutputAvailableChunk(_Chunk, tag="tool-output-available"):
    tool_call_id: str
    output: Any


class ToolOutputErrorChunk(_Chunk, tag="tool-output-error"):
    tool_call_id: str
    error_text: str


class DataChunk(msgspec.Struct):
    """``data-<name>``: its type is not one fixed tag, so it is a plain struct."""

    type: str
    id: str
    data: Any


class FinishChunk(_Chunk, tag="finish"):
    finish_reason: str | None = None


class AbortChunk(_Chunk, tag="abort"):
    reason: str | None = None


class ErrorChunk(_Chunk, tag="error"):
    error_text: str


Chunk = (
    StartChunk
    | StartStepChunk
    | FinishStepChunk
    | TextStartChunk
    | TextDeltaChunk
    | TextEndChunk
    | ReasoningStartChunk
    | ReasoningDeltaChunk
    | ReasoningEndChunk
    | ToolInputStartChunk
    | ToolInputDeltaChunk
    | ToolInputAvailableChunk
    | ToolOutputAvailableChunk
    | ToolOutputErrorChunk
    | DataChunk
    | FinishChunk
    | AbortChunk
    | ErrorChunk
)

# Every chunk type, for the OpenAPI document of the UI message stream.
CHUNK_TYPES: tuple[type, ...] = (
    StartChunk,
    StartStepChunk,
    FinishStepChunk,
    TextStartChunk,
    TextDeltaChunk,
    TextEndChunk,
    ReasoningStartChunk,
    ReasoningDeltaChunk,
    ReasoningEndChunk,
    ToolInputStartChunk,
    ToolInputDeltaChunk,
    ToolInputAvailableChunk,
    ToolOutputAvailableChunk,
    ToolOutputErrorChunk,
    DataChunk,
    FinishChunk,
    AbortChunk,
    ErrorChunk,
)

_encoder = msgspec.json.Encoder()


def frame(chunk: Chunk) -> bytes:
    return b"data: " + _encoder.encode(chunk) + b"\n\n"


def frames(chunks: list[Chunk]) -> bytes:
    return b"".join(b"data: " + _encoder.encode(chunk) + b"\n\n" for chunk in chunks)


def error_frame(code: str, message: str) -> bytes:
    """An ``error`` chunk the server sends itself: the SDK shows it as the chat's error."""
    return frame(ErrorChunk(f"{code}: {message}"))


class RunChunks:
    """The chunks of one run's answer, folded event by event in stream order.

    Text of one channel runs on in one part until something else comes; a tool call is one part
    from its first event on, and its result lands on it; each data event is a part of its own.
    """

    __slots__ = ("_run_id", "_open", "_parts", "_calls", "_stepped", "ended")

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._open: TextStartChunk | ReasoningStartChunk | None = None
        self._parts = 0
        self._calls: set[str] = set()
        self._stepped = False
        self.ended = False

    def _part_id(self) -> str:
        self._parts += 1
        return f"{self._run_id}-{self._parts - 1}"

    def _close(self, out: list[Chunk]) -> None:
        opened = self._open
        if isinstance(opened, TextStartChunk):
            out.append(TextEndChunk(opened.id))
        elif isinstance(opened, ReasoningStartChunk):
            out.append(ReasoningEndChunk(opened.id))
        self._open = None

    def chunks(self, event: Event) -> list[Chunk]:
        out: list[Chunk] = []
        if isinstance(event, Delta):
            if event.channel == "reasoning":
                if not isinstance(self._open, ReasoningStartChunk):
                    self._close(out)
                    self._open = ReasoningStartChunk(self._part_id())
                    out.append(self._open)
                out.append(ReasoningDeltaChunk(self._open.id, event.text))
            else:
                if not isinstance(self._open, TextStartChunk):
                    self._close(out)
                    self._open = TextStartChunk(self._part_id())
                    out.append(self._open)
                out.append(TextDeltaChunk(self._open.id, event.text))
        elif isinstance(event, RunStarted):
            self._stepped = True
            out += (StartChunk(event.message_id), StartStepChunk())
        elif isinstance(event, ToolCall):
            self._close(out)
            if event.call_id not in self._calls:
                self._calls.add(event.call_id)
                self._parts += 1
                if event.arguments_delta is not msgspec.UNSET:
                    out.append(ToolInputStartChunk(event.call_id, event.name))
            if event.arguments_delta is not msgspec.UNSET:
                out.append(ToolInputDeltaChunk(event.call_id, event.arguments_delta))
            if event.arguments is not msgspec.UNSET:
                out.append(ToolInputAvailableChunk(event.call_id, event.name, event.arguments))
        elif isinstance(event, ToolResult):
            # The SDK needs the call's part; a result for a call it never saw has none.
            if event.call_id in self._calls:
                self._close(out)
                if event.is_error:
                    text = event.result if isinstance(event.result, str) else _json(event.result)
                    out.append(ToolOutputErrorChunk(event.call_id, text))
                else:
                    out.append(ToolOutputAvailableChunk(event.call_id, event.result))
        elif isinstance(event, Data):
            self._close(out)
            out.append(DataChunk("data-" + event.name, self._part_id(), event.value))
        elif isinstance(event, RunCompleted):
            self._close(out)
            if self._stepped:
                out.append(FinishStepChunk())
            out.append(FinishChunk(_FINISH_REASONS.get(event.finish_reason, "other")))
            self.ended = True
        elif isinstance(event, RunCancelled):
            self._close(out)
            out += (AbortChunk(event.reason), FinishChunk())
            self.ended = True
        elif isinstance(event, RunFailed):
            self._close(out)
            out += (ErrorChunk(f"{event.error.code}: {event.error.message}"), FinishChunk("error"))
            self.ended = True
        return out


def _json(value: Any) -> str:
    return _encoder.encode(value).decode()


class UiMessageStream:
    """Writes a run's feed as the UI message stream (a ``FrameWriter`` of the feed)."""

    def __init__(self, run_id: str) -> None:
        self._chunks = RunChunks(run_id)

    @property
    def ended(self) -> bool:
        """Whether the run's terminal event went out (then ``DONE`` follows)."""
        return self._chunks.ended

    def entry(self, entry: Entry) -> bytes:
        if entry.name == b"message":
            return b""
        chunks = self._chunks.chunks(entry_event(entry))
        return frames(chunks) + (DONE if self._chunks.ended else b"")

    def token_expired(self) -> bytes:
        return error_frame(
            "token_expired",
            "the token that opened this stream has expired; resume with a fresh one",
        )

    def draining(self) -> bytes:
        return error_frame(
            "server_draining", "this server is shutting down; resume to read the rest elsewhere"
        )

    def deleted(self) -> bytes:
        return error_frame("conversation_deleted", "this conversation was deleted")


# UIMessage, as the SDK assembles it from the chunks above (only the fields these chunks set).


class UiMessage(msgspec.Struct):
    id: str
    role: str
    parts: list[dict[str, Any]]


class _Assembly:
    """One assistant message built from chunks the way the SDK's stream processor builds it."""

    def __init__(self, message: UiMessage) -> None:
        self.message = message
        self._active: dict[str, dict[str, Any]] = {}
        self._tools: dict[str, dict[str, Any]] = {}

    def add(self, chunk: Chunk) -> None:
        parts = self.message.parts
        if isinstance(chunk, StartStepChunk):
            parts.append({"type": "step-start"})
        elif isinstance(chunk, TextStartChunk | ReasoningStartChunk):
            kind = "text" if isinstance(chunk, TextStartChunk) else "reasoning"
            part = {"type": kind, "text": "", "state": "streaming"}
            self._active[chunk.id] = part
            parts.append(part)
        elif isinstance(chunk, TextDeltaChunk | ReasoningDeltaChunk):
            self._active[chunk.id]["text"] += chunk.delta
        elif isinstance(chunk, TextEndChunk | ReasoningEndChunk):
            self._active.pop(chunk.id)["state"] = "done"
        elif isinstance(chunk, ToolInputStartChunk):
            self._tool(chunk.tool_call_id, chunk.tool_name)["state"] = "input-streaming"
        elif isinstance(chunk, ToolInputAvailableChunk):
            part = self._tool(chunk.tool_call_id, chunk.tool_name)
            part.update(state="input-available", input=chunk.input)
        elif isinstance(chunk, ToolOutputAvailableChunk):
            self._tools[chunk.tool_call_id].update(state="output-available", output=chunk.output)
        elif isinstance(chunk, ToolOutputErrorChunk):
            part = self._tools[chunk.tool_call_id]
            part.update(state="output-error", errorText=chunk.error_text)
        elif isinstance(chunk, DataChunk):
            parts.append({"type": chunk.type, "id": chunk.id, "data": chunk.data})

    def _tool(self, call_id: str, name: str) -> dict[str, Any]:
        part = self._tools.get(call_id)
        if part is None:
            part = self._tools[call_id] = {"type": "tool-" + name, "toolCallId": call_id}
            self.message.parts.append(part)
        return part


class ConversationMessages:
    """A conversation's events, folded into the ``UIMessage`` list of ``useChat({messages})``."""

    def __init__(self) -> None:
        self.messages: list[UiMessage] = []
        self._runs: dict[str, tuple[RunChunks, _Assembly | None]] = {}

    def add(self, event: Event) -> None:
        if isinstance(event, UserMessage):
            text = {"type": "text", "text": event.content}
            self.messages.append(UiMessage(event.message_id, "user", [text]))
            self._runs[event.run_id] = (RunChunks(event.run_id), None)
            return
        run = self._runs.get(event.run_id)
        if run is None:
            return  # its user message was trimmed away: not a whole turn
        chunks, assembly = run
        for chunk in chunks.chunks(event):
            if isinstance(chunk, StartChunk):
                assembly = _Assembly(UiMessage(chunk.message_id, "assistant", []))
                self._runs[event.run_id] = (chunks, assembly)
                self.messages.append(assembly.message)
            elif assembly is not None:
                assembly.add(chunk)


# What ``useChat``'s ``DefaultChatTransport`` posts.


class ChatPart(msgspec.Struct):
    type: str
    text: Any = None


class ChatMessage(msgspec.Struct):
    role: str
    parts: list[ChatPart] = []


class ChatRequest(msgspec.Struct, rename="camel"):
    """What ``DefaultChatTransport`` posts, plus ``model`` and ``params`` an app may add through
    the transport's ``body``; other fields are ignored. The last user message's text parts are
    the prompt; the broker keeps the history."""

    id: str
    messages: list[ChatMessage]
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: str | None = None
    model: str = DEFAULT_MODEL
    params: dict[str, Any] = {}

    def prompt(self) -> str:
        """The text parts of the last user message; everything else is the broker's to know."""
        for message in reversed(self.messages):
            if message.role == "user":
                return "\n".join(
                    p.text for p in message.parts if p.type == "text" and isinstance(p.text, str)
                )
        raise ApiError(INVALID_FIELD, "messages: no user message to answer")
