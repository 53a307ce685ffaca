"""Stored stream entries in the form the front tier sends them: one SSE frame each.

A frame is built once per entry from the stored bytes and shared by every client of that
stream; the snapshot, the webhook and the protocol translations read the same entries.
"""

from __future__ import annotations

from typing import NamedTuple

from broker.core.events import Event, decode
from broker.core.ids import StreamPos, format_stream_id


class Entry(NamedTuple):
    """One stream entry, ready to send."""

    pos: StreamPos
    run_id: bytes
    name: bytes
    frame: bytes


def entry_from_fields(entry_id: bytes, name: bytes, data: bytes, run_id: bytes) -> Entry:
    ms, _, seq = entry_id.partition(b"-")
    frame = b"".join((b"id: ", entry_id, b"\nevent: ", name, b"\ndata: ", data, b"\n\n"))
    return Entry((int(ms), int(seq)), run_id, name, frame)


def entry_data(entry: Entry) -> bytes:
    """The event's stored JSON bytes, as they sit in the entry's frame (``data:`` to the end)."""
    frame = entry.frame
    return frame[frame.index(b"\ndata: ") + 7 : -2]


def entry_id(entry: Entry) -> str:
    """The entry's id as Redis wrote it: the SSE ``id:`` a client resumes from."""
    return format_stream_id(entry.pos)


def entry_event(entry: Entry) -> Event:
    """The entry's event as its typed Struct."""
    return decode(entry.name.decode(), entry_data(entry))
