"""Durable Streams in Redis: each write one script (``lua/stream_*.lua``), and the reads.

A stream is a Redis Stream of its messages (one entry each), a metadata hash, a hash of its
idempotent producers' states and a set of the forks made of it, all under one hash tag; its
appends publish the live notice like a conversation's. A conversation can be read as a stream
too (``ConversationView``): its entries are the conversation's events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

import msgspec
import redis.exceptions

from broker.core.entries import Entry, entry_from_fields
from broker.core.ids import ORIGIN, StreamPos, format_stream_id, parse_stream_id
from broker.core.settings import Settings
from broker.core.streams import StreamConfig
from broker.engine.connections import Client
from broker.engine.entries import DATA, NAME, RUN
from broker.engine.gathered import Gathered
from broker.engine.keys import DurableKeys, Keys
from broker.engine.scripts import Scripts


class StreamMeta(msgspec.Struct, kw_only=True):
    """A stream's metadata hash, as the scripts write it (every value a string).

    ``ct`` is the content type as it was given; ``ctn`` its media type in lower case, which
    appends are compared against. ``tail`` is the id of the newest entry (``0-0``: none yet),
    kept here because a trimmed or empty Redis stream cannot say what it last held.
    """

    ct: str
    ctn: str
    tail: str = "0-0"
    closed: str = ""
    ttl: str = ""  # sliding TTL in seconds, as given
    exp: str = ""  # absolute expiry, RFC 3339 as given
    expms: str = ""  # the same, in Unix milliseconds
    owner: str = ""  # the subject that created it ("" under BROKER_AUTH=none)
    seq: str = ""  # the last Stream-Seq accepted
    src: str = ""  # a fork's source stream
    fo: str = ""  # a fork's offset (the entry id it forked after)
    fso: str = ""  # a fork's sub-offset
    closer: str = ""  # the producer (id, epoch, seq) whose append closed it
    deleted: str = ""  # "1": deleted while forks of it lived; every request answers 410
    uid: str = ""  # this incarnation of the name: a stream deleted and created again differs
    dttl: str = ""  # the default TTL it got, having neither TTL nor expiry of its own
    bytes: str = "0"  # the bytes of every message it was given, inherited ones included

    @property
    def sliding_ttl(self) -> int | None:
        """The sliding TTL in seconds its reads restart: its own, else its default one."""
        if self.ttl:
            return int(self.ttl)
        if self.dttl and not self.expms:
            return int(self.dttl)
        return None

    @property
    def is_deleted(self) -> bool:
        return self.deleted == "1"

    @property
    def is_closed(self) -> bool:
        return self.closed == "1"

    @property
    def tail_position(self) -> StreamPos:
        return _position(self.tail)


# A bounded read's first page, in entries: its size is learnt from them.
_FIRST_PAGE = 16

# A fork's copy: entries and about this many bytes per page (one short script each), and how
# long a copy that never gets its creation is kept.
_STAGE_ENTRIES = 500
_STAGE_BYTES = 1 << 20
_STAGE_EXPIRY_MS = 600_000

# A fork's copy of its source's entries: (entry id, name, data), in order.
Inherited = list[tuple[bytes, bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Created:
    tail: StreamPos


@dataclass(frozen=True, slots=True)
class Staged:
    """A fork's inherited entries, copied into its staging stream: their bytes and the last
    one's position (ORIGIN: none)."""

    size: int
    tail: StreamPos


@dataclass(frozen=True, slots=True)
class StageLost:
    """The staged entries of a fork expired before its creation came (a copy of minutes)."""


@dataclass(frozen=True, slots=True)
class TooLarge:
    """It would hold more than BROKER_DS_MAX_STREAM_BYTES."""


@dataclass(frozen=True, slots=True)
class Exists:
    """The stream exists already; ``same``: with the configuration asked for."""

    same: bool
    owner: str
    tail: StreamPos


class AppendOutcome(Enum):
    OK = "ok"
    DUPLICATE = "duplicate"  # an idempotent producer's retry: nothing written
    DUPLICATE_CLOSED = "duplicate_closed"  # a retry of the append that closed the stream
    ALREADY_CLOSED = "already_closed"  # a close of a closed stream
    CLOSED = "closed"
    CONTENT_TYPE = "content_type"
    STALE_EPOCH = "stale_epoch"
    EPOCH_SEQ = "epoch_seq"  # a new producer epoch must start at sequence 0
    GAP = "gap"  # a producer sequence number is missing
    SEQ = "seq"  # Stream-Seq did not increase
    MISSING = "missing"  # no such stream, or not the owner's asked for
    GONE = "gone"  # soft-deleted: forks of it live
    TOO_LARGE = "too_large"  # the stream would hold more than its bound
    MOVED = "moved"  # another incarnation than the one asked for: nothing written


@dataclass(frozen=True, slots=True)
class Appended:
    """An append's outcome; the producer fields are set where the outcome has them: the
    epoch and sequence (``OK``, the duplicates; the current epoch for ``STALE_EPOCH``), the
    expected and received sequence (``GAP``); ``content_type`` is the stream's for
    ``CONTENT_TYPE``, ``uid`` the incarnation found for ``MOVED``."""

    outcome: AppendOutcome
    tail: StreamPos = ORIGIN
    epoch: str = ""
    seq: str = ""
    expected_seq: str = ""
    received_seq: str = ""
    linked: list[bytes] = field(default_factory=list)  # the subscriptions to wake (digests)
    content_type: str = ""
    uid: str = ""


class Incarnation(NamedTuple):
    """What never changes in one incarnation of a stream: kept by ``StreamStore`` for the
    writers, who pass ``uid`` to the append script, which refuses (``MOVED``) a stale one."""

    uid: str
    owner: str
    media_type: str  # ``StreamMeta.ctn``


# How many stream incarnations a store remembers for its writers (about 200 bytes each).
_KNOWN_INCARNATIONS = 4096


class State(NamedTuple):
    closed: bool
    tail: StreamPos


class Chunk(NamedTuple):
    entries: list[Entry]
    first_retained: StreamPos | None  # the oldest entry still kept (None: the stream is empty)
    gone: bool = False  # the stream read is not the one the reader began with (or none is)


def new_uid() -> str:
    """A new stream incarnation's uid."""
    return uuid.uuid4().hex


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _position(entry_id: bytes | str) -> StreamPos:
    position = parse_stream_id(entry_id)
    assert position is not None  # written by Redis
    return position


def _appended(raw: list[Any]) -> Appended:
    """The append script's answer (``lua/stream_append.lua``) as an ``Appended``."""
    outcome = AppendOutcome(_text(raw[0]))
    if outcome in (AppendOutcome.MISSING, AppendOutcome.GONE):
        return Appended(outcome)
    if outcome is AppendOutcome.MOVED:
        return Appended(outcome, uid=_text(raw[1]))
    tail = _position(raw[1])
    if outcome is AppendOutcome.OK:
        linked: list[bytes] = list(raw[4]) if len(raw) > 4 else []
        return Appended(outcome, tail, epoch=_text(raw[2]), seq=_text(raw[3]), linked=linked)
    if outcome in (AppendOutcome.DUPLICATE, AppendOutcome.DUPLICATE_CLOSED):
        return Appended(outcome, tail, epoch=_text(raw[2]), seq=_text(raw[3]))
    if outcome is AppendOutcome.STALE_EPOCH:
        return Appended(outcome, tail, epoch=_text(raw[2]))
    if outcome is AppendOutcome.GAP:
        return Appended(outcome, tail, expected_seq=_text(raw[2]), received_seq=_text(raw[3]))
    if outcome is AppendOutcome.CONTENT_TYPE:
        return Appended(outcome, tail, content_type=_text(raw[2]))
    return Appended(outcome, tail)


class StreamView:
    """A Redis Stream read as a Durable Stream: ``state`` says whether it still exists, where
    its tail is and whether it is closed; ``read`` takes entries after a position.

    A view is pinned to one incarnation of its stream (``_pin``: a field of its metadata hash
    that no later incarnation shares), so a stream deleted and created again under the same
    name, by its owner or by another subject, is gone for every reader of the first one: its
    state is None and a read says ``gone``, however the deletion and the re-creation fall
    between two of the reader's wake-ups. The read checks the pin after its ``XRANGE``, in the
    same pipeline: a pin that still holds then held throughout, since pins never recur.
    """

    live: bytes  # the pub/sub channel of its live notices

    def __init__(
        self, client: Client, data_key: str, live: str, meta_key: str, pin_field: str
    ) -> None:
        self._redis = client
        self._data = data_key
        self._meta_key = meta_key
        self._pin_field = pin_field
        self._pin: bytes | None = None
        self.live = live.encode()

    def _pinned(self, value: bytes | None) -> bool:
        """Whether ``value`` (the pin field as read now) is this view's incarnation; the first
        value seen pins it."""
        if value is None or value == b"":
            return False
        if self._pin is None:
            self._pin = value
        return value == self._pin

    async def state(self) -> State | None:
        raise NotImplementedError

    async def read(self, after: StreamPos, count: int, max_bytes: int = 0) -> Chunk:
        """Up to ``count`` entries past ``after``, and the oldest entry kept (to tell a trim).

        With ``max_bytes``, the entries' data add up to at most that many bytes (one entry
        always, whatever its size): the read takes pages sized from the largest entry seen so
        far, so what it holds stays near the bound however large the entries are."""
        entries: list[Entry] = []
        size = 0
        first: StreamPos | None = None
        page = min(count, _FIRST_PAGE) if max_bytes else count
        position = after
        largest = 1
        while True:
            start = "-" if position == ORIGIN else "(" + format_stream_id(position)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xrange(self._data, start, "+", count=page)
                if not entries:
                    pipe.xrange(self._data, "-", "+", count=1)
                pipe.hget(self._meta_key, self._pin_field)
                replies = await pipe.execute()
            raw, pin = replies[0], replies[-1]
            if not self._pinned(pin):
                return Chunk([], None, gone=True)
            if not entries:
                oldest = replies[1]
                first = _position(oldest[0][0]) if oldest else None
            full = False
            for entry_id, fields in raw:
                length = len(fields[DATA])
                if max_bytes and entries and size + length > max_bytes:
                    full = True
                    break
                entries.append(entry_from_fields(entry_id, fields[NAME], fields[DATA], fields[RUN]))
                size += length
                largest = max(largest, length)
            if full or len(raw) < page or len(entries) >= count or not max_bytes:
                break
            if size >= max_bytes:
                break
            position = entries[-1].pos
            page = max(1, min(count - len(entries), (max_bytes - size) // largest))
        return Chunk(entries, first)

    async def trimmed(self) -> bool:
        """Has retention dropped any entry? (XDEL is never used on these streams.)"""
        try:
            info = await self._redis.xinfo_stream(self._data)
        except redis.exceptions.ResponseError:
            return False  # no stream: nothing was dropped
        added = info.get("entries-added")  # Redis 7; 6.2 cannot tell, and is taken at its word
        return added is not None and int(added) > int(info["length"])


class DurableView(StreamView):
    """A stream, pinned to the incarnation its reader was authorized for (``uid``)."""

    def __init__(self, store: StreamStore, name: str, uid: str) -> None:
        keys = store.keys(name)
        super().__init__(store.client, keys.data, keys.live, keys.meta, "uid")
        self._pin = uid.encode()
        self._store = store
        self._name = name

    async def state(self) -> State | None:
        meta = await self._store.meta(self._name)
        if meta is None or meta.is_deleted or not self._pinned(meta.uid.encode()):
            return None
        return State(meta.is_closed, meta.tail_position)


class ConversationView(StreamView):
    """A conversation, read-only; it never closes."""

    def __init__(self, client: Client, keys: Keys, cid: str) -> None:
        conversation = keys.conversation(cid)
        # A conversation's first entry id is its incarnation: one created again after a
        # deletion starts later.
        super().__init__(
            client, conversation.events, conversation.live, conversation.meta, "first_id"
        )
        self._meta = conversation.meta

    async def state(self) -> State | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._meta, "first_id")
            pipe.xrevrange(self._data, "+", "-", count=1)
            first, newest = await pipe.execute()
        if not self._pinned(first):
            return None
        return State(False, _position(newest[0][0]) if newest else ORIGIN)


class StreamStore:
    def __init__(self, client: Client, keys: Keys, scripts: Scripts, settings: Settings) -> None:
        self.client = client
        self._keys = keys
        self._scripts = scripts
        self._maxlen = settings.stream_maxlen
        self._max_bytes = settings.ds_max_stream_bytes
        self._default_ttl = str(settings.ds_default_ttl_seconds or "")
        self._known: dict[str, Incarnation] = {}
        self._append = Gathered(client, scripts.stream_append)
        self._append_keys_of: dict[str, list[bytes]] = {}
        # The append's fixed arguments, encoded once.
        self._maxlen_arg = str(settings.stream_maxlen).encode()
        self._max_bytes_arg = str(settings.ds_max_stream_bytes).encode()

    def keys(self, name: str) -> DurableKeys:
        return self._keys.durable(name)

    def _script_keys(self, name: str) -> list[str]:
        keys = self.keys(name)
        return [keys.data, keys.meta, keys.producers, keys.forks, keys.live]

    def view(self, name: str, uid: str) -> DurableView:
        """A reader's view of the incarnation ``uid`` of ``name`` (``StreamMeta.uid``)."""
        return DurableView(self, name, uid)

    def conversation_view(self, cid: str) -> ConversationView:
        return ConversationView(self.client, self._keys, cid)

    async def meta(self, name: str) -> StreamMeta | None:
        key = self.keys(name).meta
        raw = await self.client.hgetall(key)
        if not raw:
            return None
        if b"uid" not in raw:
            # A stream created before streams had a uid gets one, once, so its readers can
            # be pinned like any other's.
            flat = await self._scripts.stream_uid(keys=[key], args=[new_uid()])
            raw = dict(zip(flat[::2], flat[1::2], strict=True))
            if not raw:
                return None
        meta = msgspec.convert({k.decode(): v.decode() for k, v in raw.items()}, StreamMeta)
        self._remember(name, Incarnation(meta.uid, meta.owner, meta.ctn))
        return meta

    def known(self, name: str) -> Incarnation | None:
        """The incarnation of ``name`` last read here, if remembered: a hint (the stream may
        have been deleted and created again since), to be checked by the append script."""
        return self._known.get(name)

    def forget(self, name: str) -> None:
        self._known.pop(name, None)

    def _remember(self, name: str, incarnation: Incarnation) -> None:
        known = self._known
        known.pop(name, None)
        if len(known) >= _KNOWN_INCARNATIONS:
            del known[next(iter(known))]  # the oldest remembered
        known[name] = incarnation

    async def create(
        self,
        name: str,
        config: StreamConfig,
        owner: str,
        messages: list[bytes],
        staged: Staged | None = None,
        *,
        uid: str | None = None,
    ) -> Created | Exists | TooLarge | StageLost:
        """Create incarnation ``uid`` of ``name`` (a fresh one when None); a fork's inherited
        entries were ``staged`` under the same uid (``stage_fork``)."""
        uid = uid or new_uid()
        args = [
            uid,
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
            self._default_ttl,
            self._max_bytes,
            staged.size if staged else 0,
            format_stream_id(staged.tail) if staged else "0-0",
            *messages,
        ]
        keys = [*self._script_keys(name), self.keys(name).staging(uid)]
        reply = await self._scripts.stream_create(keys=keys, args=args)
        outcome = _text(reply[0])
        if outcome == "created":
            return Created(_position(reply[1]))
        if outcome == "too_large":
            return TooLarge()
        if outcome == "stage_lost":
            return StageLost()
        return Exists(reply[1] == b"1", _text(reply[2]), _position(reply[3]))

    async def stage_fork(
        self, fork: str, uid: str, source: str, through: StreamPos, extra: Inherited
    ) -> Staged:
        """Copy what fork incarnation ``uid`` inherits into its staging stream: ``source``'s
        entries up to and including ``through``, then ``extra`` (a sub-offset's cut). Page by
        page, each at most ``_STAGE_ENTRIES`` entries and about ``_STAGE_BYTES`` bytes, each
        one short script: what the copy holds in memory and the time it holds Redis stay
        bounded however large the source. The staging stream expires by itself unless the
        creation makes it the fork's data."""
        staging = self.keys(fork).staging(uid)
        data = self.keys(source).data
        size, tail = 0, ORIGIN
        position, page, largest = ORIGIN, 16, 1
        last = format_stream_id(through)
        while through != ORIGIN and position < through:
            start = "-" if position == ORIGIN else "(" + format_stream_id(position)
            raw = await self.client.xrange(data, start, last, count=page)
            if not raw:
                break
            entries = [(eid, f[NAME], f[DATA]) for eid, f in raw]
            await self._stage(staging, entries)
            lengths = [len(entry[2]) for entry in entries]
            size += sum(lengths)
            largest = max(largest, *lengths)
            position = tail = _position(entries[-1][0])
            page = max(1, min(_STAGE_ENTRIES, _STAGE_BYTES // largest))
        if extra:
            await self._stage(staging, extra)
            size += sum(len(entry[2]) for entry in extra)
            tail = _position(extra[-1][0])
        return Staged(size, tail)

    async def _stage(self, staging: str, entries: Inherited) -> None:
        args = [_STAGE_EXPIRY_MS, *[part for entry in entries for part in entry]]
        await self._scripts.stream_stage(keys=[staging], args=args)

    async def append(
        self,
        name: str,
        media_type: str,
        messages: list[bytes],
        *,
        close: bool,
        seq: str,
        producer: tuple[str, str, str] | None,
        owner: str = "",
        uid: str = "",
    ) -> Appended:
        """Append ``messages`` and/or close, in one script that also checks what a writer
        would otherwise read first: the stream exists, belongs to ``owner`` (when given: else
        ``MISSING``, the answer for a stream that does not exist) and, when ``uid`` is given,
        is still that incarnation (else ``MOVED``, nothing written), so the write is one round
        trip."""
        pid, epoch, pseq = producer or ("", "", "")
        args = [
            media_type,
            b"1" if close else b"",
            seq,
            pid,
            epoch,
            pseq,
            self._maxlen_arg,
            self._max_bytes_arg,
            owner,
            uid,
            *messages,
        ]
        raw = await self._append(self._append_keys(name), args)
        return _appended(raw)

    def _append_keys(self, name: str) -> list[bytes]:
        """The append script's keys, encoded, remembered for the names written lately: a
        producer appends to the same stream again and again, and the keys cost a digest and
        their encoding each time (on a cluster, bytes route as their text would)."""
        found = self._append_keys_of.get(name)
        if found is None:
            keys = self.keys(name)
            found = [
                key.encode()
                for key in (
                    keys.data,
                    keys.meta,
                    keys.producers,
                    keys.forks,
                    keys.live,
                    keys.subscriptions,
                )
            ]
            if len(self._append_keys_of) >= _KNOWN_INCARNATIONS:
                self._append_keys_of.clear()
            self._append_keys_of[name] = found
        return found

    async def delete(self, name: str, *, soft: bool = False) -> bool:
        """Remove a stream; ``soft`` keeps its metadata, marked deleted, while forks of it
        live. False when it did not exist."""
        args = ["soft" if soft else ""]
        self.forget(name)
        return bool(await self._scripts.stream_delete(keys=self._script_keys(name), args=args))

    async def live_forks(self, name: str) -> int:
        """Forks of ``name`` that still exist (a fork that expired, or was deleted, is gone)."""
        forks = [f.decode() for f in await self.client.smembers(self.keys(name).forks)]
        count = 0
        for fork in forks:
            source = await self.client.hget(self.keys(fork).meta, "src")
            if source is not None and source.decode() == name:
                count += 1
            else:
                await self.client.srem(self.keys(name).forks, fork)
        return count

    async def add_fork(self, source: str, fork: str) -> None:
        await self._scripts.stream_add_fork(keys=self._script_keys(source), args=[fork])

    async def entries_after(self, name: str, after: StreamPos, count: int) -> Inherited:
        start = "-" if after == ORIGIN else "(" + format_stream_id(after)
        entries = await self.client.xrange(self.keys(name).data, start, "+", count=count)
        return [(eid, f[NAME], f[DATA]) for eid, f in entries]

    async def touch(self, name: str, ttl_seconds: int) -> None:
        """A read restarts a sliding TTL, as a write does."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key in self.keys(name).all:
                pipe.pexpire(key, ttl_seconds * 1000)
            await pipe.execute()
