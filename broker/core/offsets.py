"""Durable Streams offsets: Redis entry ids written so that string order is stream order.

An entry id ``ms-seq`` compares numerically part by part; zero-padding both parts to a fixed
width makes the plain string comparison a client may do (the protocol allows it) agree with
that order. The offset of a position is the id of the last entry before it, so "read from
offset X" is "entries after X", and the empty stream's offset is all zeros.
"""

from __future__ import annotations

import re

from broker.core.ids import ORIGIN, StreamPos

# 16 digits: milliseconds until the year 318857, and more entries per millisecond than Redis
# can write; the protocol's own examples (and its conformance suite) use this width.
WIDTH = 16
_OFFSET = re.compile(rf"\d{{{WIDTH}}}_\d{{{WIDTH}}}")


def encode(pos: StreamPos) -> str:
    return f"{pos[0]:0{WIDTH}d}_{pos[1]:0{WIDTH}d}"


def decode(offset: str) -> StreamPos | None:
    """The position an offset names, or None when it is not one this server could have minted."""
    if not _OFFSET.fullmatch(offset):
        return None
    ms, _, seq = offset.partition("_")
    return int(ms), int(seq)


ZERO = encode(ORIGIN)
