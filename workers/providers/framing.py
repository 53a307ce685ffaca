"""Incremental decoders of the two streaming framings upstreams use: SSE and NDJSON.

Both take bytes as they arrive, in pieces cut anywhere, and return only complete frames; what
is left over at the end of the body tells a clean end from a cut one.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.sse import EventStreamParser


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str


class SseDecoder(EventStreamParser[SseEvent]):
    """The shared event-stream parser (``broker.core.sse``), as a provider reads it.

    Comments (``: keepalive``), ``id`` and ``retry`` carry nothing a provider needs; an event
    without any ``data`` line is not dispatched, as a browser would not. Lines that are no SSE
    field at all are kept apart (up to 64 KiB) in ``stray``: Gemini sends an error that occurs
    mid-stream as a bare JSON object, not as an event. ``pending`` at the end of the body tells
    a cut answer from a finished one.
    """

    STRAY_LIMIT = 64 * 1024

    def __init__(self) -> None:
        super().__init__(stray_limit=self.STRAY_LIMIT)

    def _make_event(self, event: str, data: str, own_id: str | None) -> SseEvent:
        return SseEvent(event, data)


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
