"""What a Durable Streams read sends: bodies, headers, cursors, ETags, and the SSE ``data`` and
``control`` events; and a conversation's events seen as the messages of a JSON stream. Pure: the
reads themselves are the front's (``broker.front.streaming.durable``)."""

from __future__ import annotations

import base64
import random
import re
import time

import msgspec

from broker.core.entries import Entry, entry_data, entry_id
from broker.core.errors import INVALID_OFFSET, ApiError
from broker.core.ids import ORIGIN, StreamPos
from broker.protocols.durable_streams import offsets

JSON = "application/json"

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"cross-origin-resource-policy", b"cross-origin"),
]
BASE64 = (b"stream-sse-data-encoding", b"base64")

_control = msgspec.json.Encoder()
_LINES = re.compile(rb"\r\n|\r|\n")
# Cursors count 20-second intervals from 2024-10-09T00:00:00Z, as the protocol suggests.
_CURSOR_EPOCH = 1728432000.0
_CURSOR_INTERVAL = 20.0


class ControlEvent(msgspec.Struct, omit_defaults=True):
    """The SSE ``control`` event."""

    streamNextOffset: str  # noqa: N815 (the protocol's field names)
    streamCursor: str | None = None  # noqa: N815
    upToDate: bool = False  # noqa: N815
    streamClosed: bool = False  # noqa: N815


class ConversationMessage(msgspec.Struct):
    """A conversation event as one message of the read-only JSON view of the conversation."""

    id: str
    type: str
    data: msgspec.Raw


_message = msgspec.json.Encoder()


def conversation_message(entry: Entry) -> bytes:
    """A conversation's entry as a message ``{"id", "type", "data"}``."""
    return _message.encode(
        ConversationMessage(entry_id(entry), entry.name.decode(), msgspec.Raw(entry_data(entry)))
    )


def cursor(previous: str | None) -> str:
    """The current interval; past a cursor the client already holds when it is not behind it,
    so the cache key of a repeated request always changes."""
    current = int((time.time() - _CURSOR_EPOCH) // _CURSOR_INTERVAL)
    if (
        previous is not None
        and previous.isascii()
        and previous.isdigit()
        and len(previous) <= 16
        and int(previous) >= current
    ):
        jitter = random.randint(1, 3600)  # noqa: S311 (spreads caches, guards nothing)
        current = int(previous) + max(1, int(jitter // _CURSOR_INTERVAL))
    return str(current)


def is_text(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type == JSON


def parse_offset(raw: str | None, tail: StreamPos) -> tuple[StreamPos, bool, bool]:
    """(position, is ``now``, is the stream's beginning)."""
    if raw is None or raw == "-1":
        return ORIGIN, False, True
    if raw == "now":
        return tail, True, False
    pos = offsets.decode(raw)
    if pos is None:
        raise ApiError(INVALID_OFFSET, "offset must be -1, now, or an offset this server sent")
    if pos > tail:
        raise ApiError(INVALID_OFFSET, "offset is past the end of the stream")
    return pos, False, False


def body_of(media_type: str, messages: list[bytes]) -> bytes:
    if media_type == JSON:
        return b"[" + b",".join(messages) + b"]"
    return b"".join(messages)


def etag(etag_id: str, start: StreamPos, end: StreamPos, closed: bool) -> str:
    suffix = ":c" if closed else ""
    return f'"{etag_id}:{offsets.encode(start)}:{offsets.encode(end)}{suffix}"'


def read_headers(
    content_type: str,
    next_pos: StreamPos,
    *,
    up_to_date: bool,
    closed: bool,
    cursor_value: str | None,
) -> dict[str, str]:
    headers = {"Content-Type": content_type, "Stream-Next-Offset": offsets.encode(next_pos)}
    if up_to_date:
        headers["Stream-Up-To-Date"] = "true"
    if closed:
        headers["Stream-Closed"] = "true"
    elif cursor_value is not None:
        headers["Stream-Cursor"] = cursor_value
    return headers


class ReadEnd(msgspec.Struct, frozen=True):
    """The ``error`` event that ends an SSE read the server ends on purpose (it is not one of
    the protocol's own events, so a client that does not know it just sees the read end and
    reconnects at its offset, where it gets the matching error answer)."""

    code: str
    message: str


TOKEN_EXPIRED_EVENT = (
    b"event: error\ndata:"
    + _control.encode(
        ReadEnd(
            "token_expired",
            "the token that opened this read has expired; read on from the last "
            "streamNextOffset with a fresh one",
        )
    )
    + b"\n\n"
)


def data_event(media_type: str, messages: list[bytes]) -> bytes:
    payload = body_of(media_type, messages)
    if not is_text(media_type):
        payload = base64.b64encode(payload)
    lines = _LINES.split(payload)
    return b"event: data\n" + b"".join(_data_line(line) for line in lines) + b"\n"


def _data_line(line: bytes) -> bytes:
    # A reader drops one space after the colon: only a line that starts with one needs it.
    return (b"data: " if line.startswith(b" ") else b"data:") + line + b"\n"


def control_event(
    next_pos: StreamPos, *, up_to_date: bool, closed: bool, client_cursor: str | None
) -> bytes:
    control = ControlEvent(
        offsets.encode(next_pos),
        None if closed else cursor(client_cursor),
        up_to_date or closed,
        closed,
    )
    return b"event: control\ndata:" + _control.encode(control) + b"\n\n"
