"""Stream entries as Redis returns them (``XRANGE``, ``XREVRANGE``), read by place.

Every entry of a conversation or a Durable Stream is written with the same three fields in the
same order, ``t`` (the event's name), ``d`` (its JSON or the message's bytes) and ``r`` (the run,
empty outside runs): ``lua/notice.lua`` and ``lua/stream_stage.lua``. The engine's client hands
stream replies over as Redis sent them (``Engine``), so a replay builds each entry's frame
straight from the reply's list, without a dict per entry first: on a resume storm that dict
was a quarter of the front's CPU.
"""

from __future__ import annotations

from typing import Any

from broker.core.entries import Entry, entry_from_fields

# Where each field's value sits in an entry's flat list [t, name, d, data, r, run].
NAME, DATA, RUN = 1, 3, 5


def entries(reply: list[Any]) -> list[Entry]:
    """A stream reply's entries, ready to send."""
    return [entry_from_fields(eid, f[NAME], f[DATA], f[RUN]) for eid, f in reply]


def as_sent(reply: Any, **_options: Any) -> Any:
    """The response callback of the stream reads: the reply as Redis sent it."""
    return reply
