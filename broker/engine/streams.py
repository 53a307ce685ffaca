"""Durable Streams in Redis: the scripts that write, and the reads, over the front's client."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from broker.core.ids import StreamPos
from broker.core.settings import Settings
from broker.engine.conversations import script_text
from broker.engine.keys import DurableKeys, Keys
from broker.engine.stream_scripts import ADD_FORK, APPEND, CREATE, DELETE
from broker.protocols.durable_streams import offsets
from broker.protocols.durable_streams.wire import StreamMeta


class Config(NamedTuple):
    """What a create asks for; an existing stream matches when all of it is equal."""

    content_type: str
    media_type: str
    ttl: str
    expires_at: str
    expires_at_ms: str
    closed: bool
    # A fork: the source's name, the fork offset's entry id and the sub-offset ('' otherwise).
    source: str = ""
    fork_offset: str = ""
    fork_sub_offset: str = ""


class Created(NamedTuple):
    created: bool  # False: it existed already
    same: bool  # it existed with the same configuration
    owner: str
    tail: StreamPos


class Appended(NamedTuple):
    outcome: str  # see scripts.APPEND
    tail: StreamPos
    extra: list[str]


class Chunk(NamedTuple):
    entries: list[tuple[StreamPos, dict[bytes, bytes]]]
    first_retained: StreamPos | None  # the oldest entry still kept (None: the stream is empty)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DurableStore:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self._keys = Keys(settings.key_prefix)
        self._maxlen = settings.stream_maxlen

        def script(body: str) -> Any:
            return redis.register_script(script_text(body, cluster=settings.redis_cluster))

        self._create = script(CREATE)
        self._append = script(APPEND)
        self._delete = script(DELETE)
        self._add_fork = script(ADD_FORK)

    def keys(self, name: str) -> DurableKeys:
        return self._keys.durable(name)

    def _script_keys(self, keys: DurableKeys) -> list[str]:
        return [keys.data, keys.meta, keys.producers, keys.forks, keys.live]

    async def meta(self, name: str) -> StreamMeta | None:
        raw = await self.redis.hgetall(self.keys(name).meta)
        return _meta(raw)

    async def create(
        self,
        name: str,
        config: Config,
        owner: str,
        messages: list[bytes],
        inherited: list[tuple[bytes, bytes, bytes]] | None = None,
    ) -> Created:
        """``inherited``: a fork's copy of its source's entries, (id, name, data), in order."""
        inherited = inherited or []
        args = [
            config.content_type,
            config.media_type,
            config.ttl,
            config.expires_at,
            config.expires_at_ms,
            "1" if config.closed else "",
            owner,
            self._maxlen,
            config.source,
            config.fork_offset,
            config.fork_sub_offset,
            len(inherited),
            *[part for entry in inherited for part in entry],
            *messages,
        ]
        reply = await self._create(keys=self._script_keys(self.keys(name)), args=args)
        if _text(reply[0]) == "created":
            return Created(True, True, owner, offsets.from_entry_id(reply[1]))
        return Created(False, reply[1] == b"1", _text(reply[2]), offsets.from_entry_id(reply[3]))

    async def append(
        self,
        name: str,
        media_type: str,
        messages: list[bytes],
        *,
        close: bool,
        seq: str,
        producer: tuple[str, str, str] | None,
    ) -> Appended:
        pid, epoch, pseq = producer or ("", "", "")
        args = [media_type, "1" if close else "", seq, pid, epoch, pseq, self._maxlen, *messages]
        reply = await self._append(keys=self._script_keys(self.keys(name)), args=args)
        outcome = _text(reply[0])
        if outcome == "missing":
            return Appended(outcome, offsets.ZERO_POS, [])
        return Appended(outcome, offsets.from_entry_id(reply[1]), [_text(v) for v in reply[2:]])

    async def delete(self, name: str, *, soft: bool = False) -> bool:
        keys = self._script_keys(self.keys(name))
        return bool(await self._delete(keys=keys, args=["soft" if soft else ""]))

    async def live_forks(self, name: str) -> int:
        """Forks of ``name`` that still exist (a fork that expired, or was deleted, is gone)."""
        forks = [f.decode() for f in await self.redis.smembers(self.keys(name).forks)]
        count = 0
        for fork in forks:
            source = await self.redis.hget(self.keys(fork).meta, "src")
            if source is not None and source.decode() == name:
                count += 1
            else:
                await self.redis.srem(self.keys(name).forks, fork)
        return count

    async def add_fork(self, source: str, fork: str) -> None:
        await self._add_fork(keys=self._script_keys(self.keys(source)), args=[fork])

    async def entries_through(
        self, data_key: str, last: StreamPos
    ) -> list[tuple[bytes, bytes, bytes]]:
        """Every entry up to and including ``last``: what a fork at that offset inherits."""
        if last == offsets.ZERO_POS:
            return []
        entries = await self.redis.xrange(data_key, "-", offsets.entry_id(last))
        return [(eid, f[b"t"], f[b"d"]) for eid, f in entries]

    async def entries_after(
        self, data_key: str, after: StreamPos, count: int
    ) -> list[tuple[bytes, bytes, bytes]]:
        start = "-" if after == offsets.ZERO_POS else "(" + offsets.entry_id(after)
        entries = await self.redis.xrange(data_key, start, "+", count=count)
        return [(eid, f[b"t"], f[b"d"]) for eid, f in entries]

    async def touch(self, name: str, ttl_seconds: int) -> None:
        """A read restarts a sliding TTL, as a write does."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys(name).all:
                pipe.pexpire(key, ttl_seconds * 1000)
            await pipe.execute()

    async def read(self, data_key: str, after: StreamPos, count: int) -> Chunk:
        """Up to ``count`` entries past ``after``, and the oldest entry kept (to tell a trim)."""
        start = "-" if after == offsets.ZERO_POS else "(" + offsets.entry_id(after)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(data_key, start, "+", count=count)
            pipe.xrange(data_key, "-", "+", count=1)
            entries, oldest = await pipe.execute()
        first = offsets.from_entry_id(oldest[0][0]) if oldest else None
        return Chunk([(offsets.from_entry_id(eid), fields) for eid, fields in entries], first)

    async def trimmed(self, data_key: str) -> bool:
        """Has retention dropped any entry of this stream? (XDEL is never used on it.)"""
        try:
            info = await self.redis.xinfo_stream(data_key)
        except redis.exceptions.ResponseError:
            return False  # no stream: nothing was dropped
        added = info.get("entries-added")  # Redis 7; 6.2 cannot tell, and is taken at its word
        return added is not None and int(added) > int(info["length"])


def _meta(raw: dict[bytes, bytes]) -> StreamMeta | None:
    if not raw:
        return None
    return msgspec.convert({k.decode(): v.decode() for k, v in raw.items()}, StreamMeta)
