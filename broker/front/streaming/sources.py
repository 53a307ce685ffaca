"""What a read reads: a Durable Streams stream, or a conversation seen as one.

Both are Redis Streams whose appends publish the live notice; they differ in where their
state lives and in what one entry becomes as a message.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Protocol

import msgspec

from broker.core.ids import StreamPos
from broker.engine.keys import Keys
from broker.engine.streams import DurableStore
from broker.protocols.durable_streams import offsets
from broker.protocols.durable_streams.wire import ConversationMessage, StreamMeta

JSON = "application/json"
_encoder = msgspec.json.Encoder()


class State(NamedTuple):
    closed: bool
    tail: StreamPos


class Source(Protocol):
    data_key: str
    live: bytes
    content_type: str
    media_type: str
    etag_id: str
    ttl: int | None
    closable: bool  # a conversation never closes
    stream_key: str  # what counts this process's open SSE reads of it (Services.admit_stream)

    async def state(self) -> State | None:
        """The stream's closure and tail now; None once it is gone."""

    def message(self, pos: StreamPos, fields: dict[bytes, bytes]) -> bytes:
        """One entry as the message a reader gets."""


def _state(meta: StreamMeta) -> State:
    return State(meta.is_closed, offsets.from_entry_id(meta.tail))


class StreamSource:
    def __init__(self, store: DurableStore, name: str, meta: StreamMeta) -> None:
        keys = store.keys(name)
        self._store = store
        self._name = name
        self.data_key = keys.data
        self.live = keys.live.encode()
        self.content_type = meta.ct
        self.media_type = meta.ctn
        self.etag_id = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
        self.ttl = int(meta.ttl) if meta.ttl else None
        self.closable = True
        self.stream_key = "/" + name  # never a conversation id: those have no "/"

    async def state(self) -> State | None:
        meta = await self._store.meta(self._name)
        return None if meta is None else _state(meta)

    def message(self, pos: StreamPos, fields: dict[bytes, bytes]) -> bytes:
        return fields[b"d"]


class ConversationSource:
    """A conversation, read-only: each event a JSON message ``{"id", "type", "data"}``."""

    content_type = JSON
    media_type = JSON
    ttl = None
    closable = False

    def __init__(self, store: DurableStore, keys: Keys, cid: str) -> None:
        conversation = keys.conversation(cid)
        self._store = store
        self._meta = conversation.meta
        self.data_key = conversation.events
        self.live = conversation.live.encode()
        self.etag_id = "c:" + cid
        self.stream_key = cid  # the conversation's own SSE streams count together with these

    async def state(self) -> State | None:
        async with self._store.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._meta, "first_id")
            pipe.xrevrange(self.data_key, "+", "-", count=1)
            first, newest = await pipe.execute()
        if first is None:
            return None
        tail = offsets.from_entry_id(newest[0][0]) if newest else offsets.ZERO_POS
        return State(False, tail)

    def message(self, pos: StreamPos, fields: dict[bytes, bytes]) -> bytes:
        return _encoder.encode(
            ConversationMessage(
                offsets.entry_id(pos), fields[b"t"].decode(), msgspec.Raw(fields[b"d"])
            )
        )
