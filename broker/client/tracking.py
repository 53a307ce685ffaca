"""What a stream iterator knows between connections: the position to resume from and, for a
run's stream, which run it follows and whether it has ended. It also turns each SSE event
into the typed struct a caller receives."""

from __future__ import annotations

import msgspec

from broker.client.errors import StreamEndedError, TokenExpired
from broker.client.sse import ServerSentEvent
from broker.core.events import EVENT_TYPES, TERMINAL_EVENTS, ErrorInfo, Event, Reset, decode


class UnknownEvent(msgspec.Struct, frozen=True):
    """An event this version of the client has no type for; ``data`` is its raw JSON text."""

    name: str
    data: str


StreamItem = Event | Reset | UnknownEvent

_reset = msgspec.json.Decoder(Reset)
_error = msgspec.json.Decoder(ErrorInfo)


class StreamTracker:
    def __init__(self, last_event_id: str | None, run_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        # For a run's stream: the run followed ("active" until the first event names it).
        self.run_id = run_id
        self.finished = False

    def accept(self, sse: ServerSentEvent) -> StreamItem | None:
        """The item for one event, or None for one to skip; raises for an ``error`` event."""
        if sse.event == "error":
            try:
                info = _error.decode(sse.data)
                code, message = info.code, info.message
            except msgspec.DecodeError:
                code, message = "stream_error", sse.data
            if code == "token_expired":
                raise TokenExpired(message, self.last_event_id)
            raise StreamEndedError(0, code, message)
        if sse.event == "reset":
            try:
                return _reset.decode(sse.data)
            except msgspec.DecodeError:
                return Reset(reason="unknown", earliest_event_id=None)
        if sse.id:
            self.last_event_id = sse.id
        if sse.event not in EVENT_TYPES:
            return UnknownEvent(sse.event, sse.data)
        try:
            event = decode(sse.event, sse.data.encode())
        except msgspec.DecodeError:
            return UnknownEvent(sse.event, sse.data)
        if self.run_id is not None:
            if self.run_id == "active":
                self.run_id = event.run_id
            if type(event) in TERMINAL_EVENTS and event.run_id == self.run_id:
                self.finished = True
        return event
