"""An incremental parser of ``text/event-stream``, following the WHATWG HTML rules.

It takes the body as it arrives, in pieces cut anywhere (inside a line, inside a UTF-8
sequence, between the CR and LF of a line end), and returns the events each piece completes:

- lines end with CRLF, LF or CR; a leading byte order mark is dropped;
- ``data`` lines of one event are joined with LF; an event with no data is not dispatched;
- ``id`` sets the last event id, kept across events until the next ``id`` (one containing
  NUL is ignored), also when the event carries no data;
- ``retry`` with only ASCII digits sets the reconnection delay; comments (``:``) are
  remembered and otherwise ignored; a field with no colon has an empty value;
- an unfinished event at the end of the body is dropped.
"""

from __future__ import annotations

import codecs
from typing import NamedTuple


class ServerSentEvent(NamedTuple):
    """One dispatched event. ``id`` is the last event id in force when it was dispatched."""

    event: str
    data: str
    id: str | None


class SSEParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._after_cr = False
        self._event = ""
        self._data: list[str] = []
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        return self._lines(self._decoder.decode(chunk))

    def _lines(self, text: str) -> list[ServerSentEvent]:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across pieces
        self._after_cr = text.endswith("\r")
        self._buffer += text
        lines = self._buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buffer = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event, self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data), self.last_event_id)
