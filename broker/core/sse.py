"""The one parser of ``text/event-stream``, after the WHATWG HTML rules; bytes in, events out.

The broker's clients, the workers reading model upstreams and the test suite all read SSE, so
they share this parser and its edge cases are settled once. It does no I/O: it takes a body as
it arrives, in pieces cut anywhere (inside a line, inside a UTF-8 sequence, between the CR and
the LF of one line end), and returns the events each piece completes:

- lines end with CRLF, LF or CR; a leading byte order mark is dropped; bytes that are no UTF-8
  become U+FFFD, as a browser shows them;
- ``data`` lines of one event are joined with LF; an event with no ``data`` line is not
  dispatched (its ``event`` name is forgotten);
- ``id`` sets the last event id, kept across events until the next ``id`` (one containing NUL
  is ignored), also when the event carries no data;
- ``retry`` with only ASCII digits sets the reconnection delay; comment lines (``:``) reach
  ``_on_comment`` and are otherwise ignored; a field with no colon has an empty value;
- an unfinished event at the end of the body is never dispatched; ``pending`` tells whether
  there was one, which is how a reader tells a body cut short from a clean end.

What a dispatched event becomes is the subclass's choice (``_make_event``), so that each reader
gets the type it has always handed on. Lines that are no SSE field at all can be kept, up to a
limit, in ``stray``: Gemini sends an error that occurs mid-stream as a bare JSON object.
"""

from __future__ import annotations

import re
from typing import Generic, NamedTuple, TypeVar

E = TypeVar("E")

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")


class ServerSentEvent(NamedTuple):
    """One dispatched event. ``id`` is the last event id in force when it was dispatched."""

    event: str
    data: str
    id: str | None


class EventStreamParser(Generic[E]):
    """The parsing rules; a subclass turns each dispatched event into its ``E``.

    ``last_event_id`` and ``retry_ms`` are the stream's state as the rules define it; ``stray``
    holds the lines that were no field, as long as they add up to less than ``stray_limit``
    characters (none by default).
    """

    def __init__(self, *, stray_limit: int = 0) -> None:
        self._buffer = b""
        self._started = False
        # The last piece ended in CR: an LF opening the next one completes that line end.
        self._after_cr = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._stray_limit = stray_limit
        self._stray_size = 0
        self.stray: list[str] = []
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[E]:
        """The events that ``chunk`` completes, in order."""
        if not chunk:
            return []
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = chunk.endswith(b"\r")
        buffer = self._buffer + chunk
        events: list[E] = []
        start = 0
        for line_end in _LINE_END.finditer(buffer):
            event = self._line(buffer[start : line_end.start()])
            if event is not None:
                events.append(event)
            start = line_end.end()
        self._buffer = buffer[start:]
        return events

    @property
    def pending(self) -> bool:
        """Whether an event was begun and not dispatched: at the end of the body, a cut."""
        return bool(self._data) or bool(self._buffer.strip())

    def _make_event(self, event: str, data: str, own_id: str | None) -> E:
        """What a dispatched event becomes; ``own_id`` is the id that event itself carried."""
        raise NotImplementedError

    def _on_comment(self, text: str) -> None:
        """A comment line, without its colon; ignored unless a subclass keeps it."""

    def _line(self, raw: bytes) -> E | None:
        if not self._started:
            self._started = True
            raw = raw.removeprefix(_BOM)
        line = raw.decode("utf-8", errors="replace")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self._on_comment(line[1:])
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
                self._id = self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        elif self._stray_size < self._stray_limit:
            self.stray.append(line)
            self._stray_size += len(line)
        return None

    def _dispatch(self) -> E | None:
        event, data, own_id = self._event, self._data, self._id
        self._event, self._data, self._id = "", [], None
        if not data:
            return None
        return self._make_event(event or "message", "\n".join(data), own_id)


class SSEParser(EventStreamParser[ServerSentEvent]):
    """The parser as a browser's ``EventSource`` applies it: events carry the last event id in
    force, and ``comments`` counts the comment lines (a server's keepalives)."""

    def __init__(self) -> None:
        super().__init__()
        self.comments = 0

    def _make_event(self, event: str, data: str, own_id: str | None) -> ServerSentEvent:
        return ServerSentEvent(event, data, self.last_event_id)

    def _on_comment(self, text: str) -> None:
        self.comments += 1
