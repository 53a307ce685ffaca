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


# Lua, shared by every script that appends: `append(name, data, run)` XADDs one entry and keeps
# it for the notice; `notify(channel, after)` publishes the notice. The publish command
# (PUBLISH, or SPUBLISH on a cluster) is filled in when the scripts are built.
LUA_NOTICE = """
local function bin(s)
  local n = #s
  if n < 256 then return string.char(196, n) .. s end
  if n < 65536 then return string.char(197) .. struct.pack('>I2', n) .. s end
  return string.char(198) .. struct.pack('>I4', n) .. s
end
local function array(n)
  if n < 16 then return string.char(144 + n) end
  if n < 65536 then return string.char(220) .. struct.pack('>I2', n) end
  return string.char(221) .. struct.pack('>I4', n)
end
local notice = {}
local function append(maxlen, name, data, run)
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 't', name, 'd', data, 'r', run)
  notice[#notice + 1] = array(4) .. bin(id) .. bin(name) .. bin(data) .. bin(run)
  return id
end
local function newest()
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last == 0 then return '0-0' end
  return last[1][1]
end
local function notify(channel, after)
  redis.call('{publish}', channel, array(2) .. bin(after) .. array(#notice) .. table.concat(notice))
end
"""
