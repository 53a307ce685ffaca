"""Incremental decoders of the two streaming framings upstreams use: SSE and NDJSON.

Both take bytes as they arrive, in pieces cut anywhere, and return only complete frames; what
is left over at the end of the body tells a clean end from a cut one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str


class SseDecoder:
    """The WHATWG event-stream parser: CR, LF or CRLF line ends, ``data`` lines joined by LF.

    Comments (``: keepalive``), ``id`` and ``retry`` carry nothing a provider needs and are
    dropped; an event without any ``data`` line is not dispatched, as a browser would not.
    Lines that are no SSE field at all are kept apart (up to 64 KiB) in ``stray``: Gemini sends
    an error that occurs mid-stream as a bare JSON object, not as an event.
    """

    STRAY_LIMIT = 64 * 1024

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._event = ""
        self._data: list[str] = []
        self._started = False
        self.stray: list[str] = []
        self._stray_size = 0

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        start = 0
        buffer = self._buffer
        while True:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start)
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == len(buffer):
                    break  # a CR at the end may be the first half of a CRLF
                end, after = cr, cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            elif lf != -1:
                end, after = lf, lf + 1
            else:
                break
            event = self._line(bytes(buffer[start:end]))
            if event is not None:
                events.append(event)
            start = after
        del buffer[:start]
        return events

    @property
    def pending(self) -> bool:
        """Whether an event was begun and not dispatched: at the end of the body, a cut."""
        return bool(self._data) or bool(self._buffer.strip())

    def _line(self, raw: bytes) -> SseEvent | None:
        if not self._started:
            self._started = True
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        line = raw.decode("utf-8", errors="replace")
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name not in ("id", "retry") and self._stray_size < self.STRAY_LIMIT:
            self.stray.append(line)
            self._stray_size += len(line)
        return None


class NdjsonDecoder:
    """Newline-delimited JSON: one document per line, blank lines ignored."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        lines: list[bytes] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) != -1:
            line = bytes(self._buffer[start:end]).strip()
            if line:
                lines.append(line)
            start = end + 1
        del self._buffer[:start]
        return lines

    def rest(self) -> bytes:
        """What followed the last newline: a final line some servers leave unterminated."""
        rest = bytes(self._buffer).strip()
        self._buffer.clear()
        return rest
