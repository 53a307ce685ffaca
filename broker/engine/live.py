"""The live notice: what every append publishes on its conversation's channel.

The stream stays the source of truth; the notice only saves the fronts a read. It carries the
entries just written (their ids and stored bytes, so a front builds the same frames a read
would) and the id of the entry they follow. A front compares that id with what each client
has: equal means the notice continues the client's stream exactly; otherwise the client reads
the difference from the stream first. Pub/sub may drop a notice (a reconnect, a failover): the
next one shows the gap, and a subscription that was interrupted re-checks every stream it
carried.

The notice is MessagePack written by the append scripts themselves: an array of the previous
id and an array of ``[id, name, data, run_id]`` entries, every string as ``bin``, so any bytes
pass through unchanged.
"""

from __future__ import annotations

import msgspec

from broker.core.entries import Entry, entry_from_fields
from broker.core.ids import StreamPos


class LiveNotice(msgspec.Struct, array_like=True, frozen=True):
    after: bytes  # the stream's newest entry id before these were written ("0-0": none)
    entries: list[tuple[bytes, bytes, bytes, bytes]]  # (id, name, data, run_id), in order


_decoder = msgspec.msgpack.Decoder(LiveNotice)

# Published on a conversation's channel when it is deleted, instead of a notice: its streams
# end. Not MessagePack of a ``LiveNotice`` (whose first byte is an array's), so never mistaken.
DELETED_NOTICE = b"deleted"


def decode_notice(data: bytes) -> tuple[StreamPos, list[Entry]]:
    """The position the entries follow, and the entries as frames; raises on a bad notice."""
    notice = _decoder.decode(data)
    ms, _, seq = notice.after.partition(b"-")  # written by our own scripts: no need to validate
    return (int(ms), int(seq)), [entry_from_fields(*fields) for fields in notice.entries]
