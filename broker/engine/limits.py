"""Limits per subject, counted in Redis so that every front enforces one limit, not one each.

All of a subject's counters share the hash tag of ``SubjectKeys`` and are touched by one script
(``lua/admit.lua``) or by single-key commands, so they stay legal on Redis Cluster. A request
pays one script call, sent in the same round trip as the read of its conversation's owner; an
SSE event pays nothing.

- Requests and posts per minute: a sliding window estimated from two fixed one-minute counters.
- Open streams: a sorted set of stream ids scored by lease expiry. Each front renews the leases
  of all its open streams in one round trip per interval and drops a stream's lease when it
  ends; the streams of a front that died stop counting when their leases run out.
- Active runs: a sorted set of the subject's conversations with a run, scored by the run's
  deadline. Nobody has to remember to remove one: a subject at its limit has its members checked
  against the conversations themselves (one more round trip, only then), and a member whose end
  is never seen expires with its deadline.
- Conversations created per UTC day: a counter (``creation_counter``), incremented in the round
  trip that checks the conversation before its first message is queued.
- Failed token checks per client address and minute: a counter (``failed_authentication``).
- Durable Streams writes (``admit_write``, ``lua/ds_admit.lua``): messages per minute (a sliding
  window as for requests), streams created per UTC day, and storage: a hash of the bytes the
  subject wrote to each stream incarnation, with their total. The stream's keys live in
  another slot, so a stream that expired or was deleted by someone else is not seen at once:
  a subject at its storage limit has its entries checked against the streams themselves (one
  more round trip, only then) and those gone are dropped, as for the active runs.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis.exceptions import NoScriptError

from broker.core.settings import Settings
from broker.engine.connections import Client
from broker.engine.conversations import Conversations
from broker.engine.gathered import Gathered
from broker.engine.keys import Keys
from broker.engine.scripts import Scripts

_MINUTE_MS = 60_000
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Quota:
    """What one request may take: 0 checks nothing of that kind."""

    requests_per_minute: int = 0
    posts_per_minute: int = 0  # a post, and a run of ``conversation``
    streams: int = 0  # an open stream, leased until it ends
    active_runs: int = 0
    conversation: str | None = None


@dataclass(frozen=True, slots=True)
class Admitted:
    """Counted; ``lease`` names the open-stream lease now held (None: none taken)."""

    lease: StreamLease | None


@dataclass(frozen=True, slots=True)
class StreamLease:
    """An open stream's place in its subject's count, renewed by its front until it ends."""

    key: str
    stream_id: str


class Over(Enum):
    REQUESTS = "requests"
    POSTS = "posts"
    STREAMS = "streams"
    RUNS = "runs"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Over a limit; for a rate, ``retry_after_ms`` is when the sliding count falls below it
    if nothing more comes."""

    over: Over
    retry_after_ms: int = 0


Verdict = Admitted | Refusal


@dataclass(frozen=True, slots=True)
class WriteQuota:
    """One Durable Streams write: what it takes, and the limits it meets (0: not checked)."""

    messages: int
    size: int  # bytes it stores
    field: str  # the stream incarnation it writes, as its storage field (``storage_field``)
    messages_per_minute: int = 0
    storage_bytes: int = 0
    streams_per_day: int = 0  # checked and counted only when the write creates a stream


class WriteOver(Enum):
    MESSAGES = "messages"
    CREATED = "created"
    STORAGE = "storage"


@dataclass(frozen=True, slots=True)
class WriteRefusal:
    over: WriteOver
    retry_after_ms: int = 0
    stored: int = 0  # the subject's bytes stored, for STORAGE


def storage_field(uid: str, name: str) -> str:
    """A stream incarnation's field in its writers' storage hashes."""
    return f"{uid} {name}"


class Limits:
    def __init__(
        self,
        client: Client,
        keys: Keys,
        scripts: Scripts,
        conversations: Conversations,
        settings: Settings,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._admit = scripts.admit
        self._ds_admit = scripts.ds_admit
        # Sent with the admissions of other writes of the moment, as their appends are.
        self._ds_admit_gathered = Gathered(client, scripts.ds_admit)
        self._ds_refund = scripts.ds_refund
        self._conversations = conversations
        self._lease_ms = int(settings.stream_lease_seconds * 1000)
        self._run_deadline_ms = int(settings.max_run_seconds * 2 * 1000)

    def creation_counter(self, subject: str) -> str:
        """The counter of conversations ``subject`` created today (UTC), for ``precheck``."""
        return self._keys.subject(subject).created(int(time.time() * 1000) // _DAY_MS)

    async def uncount(self, counter: str) -> None:
        """Take one back from a counter (``creation_counter``'s: a creation that was refused)."""
        await self._redis.decr(counter)

    async def failed_authentication(self, address: str) -> tuple[int, float]:
        """Count a failed token check from ``address``: its failures in this minute, and when
        the minute ends (Unix seconds)."""
        now = int(time.time() * 1000)
        minute = now // _MINUTE_MS
        key = self._keys.failed_authentications(address, minute)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, 2 * _MINUTE_MS)
            count, _ = await pipe.execute()
        return int(count), (minute + 1) * _MINUTE_MS / 1000

    async def admit(
        self, subject: str | None, quota: Quota, *, owner_of: str | None = None
    ) -> tuple[Verdict, tuple[str | None, bool] | None]:
        """Count one request of ``subject`` against ``quota`` (no subject: nothing counted)
        and, in the same round trip, read who owns conversation ``owner_of`` and whether it
        exists (see ``Conversations.owner``)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            read_owner: Callable[[Any], tuple[str | None, bool]] | None = None
            if owner_of is not None:
                read_owner = self._conversations.queue_owner(pipe, owner_of)
            pending = None
            if subject is not None:
                pending = self._queue(pipe, subject, quota)
                # EVALSHA itself: a script registered on a pipeline costs a SCRIPT EXISTS
                # round trip first, on every request.
                pipe.evalsha(self._admit.sha, len(pending[0]), *pending[0], *pending[1])
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
                raise reply
        owner = read_owner(replies[0]) if read_owner is not None else None
        if pending is None:
            return Admitted(None), owner
        keys, args, stream_id = pending
        counted = replies[-1]
        if isinstance(counted, NoScriptError):
            # Redis restarted and forgot the script: a plain call loads it.
            counted = await self._admit(keys=keys, args=args)
        return await self._verdict(keys, args, stream_id, counted), owner

    def _queue(self, pipe: Any, subject: str, quota: Quota) -> tuple[list[str], list[Any], str]:
        keys_of = self._keys.subject(subject)
        now = int(time.time() * 1000)
        minute = now // _MINUTE_MS
        stream_id = uuid.uuid4().hex if quota.streams else ""
        posting = quota.conversation is not None
        keys = [
            keys_of.requests(minute),
            keys_of.requests(minute - 1),
            keys_of.posts(minute),
            keys_of.posts(minute - 1),
            keys_of.streams,
            keys_of.runs,
        ]
        args: list[Any] = [
            now,
            quota.requests_per_minute,
            quota.posts_per_minute if posting else 0,
            quota.streams,
            stream_id,
            now + self._lease_ms,
            quota.active_runs if posting else 0,
            quota.conversation or "",
            now + self._run_deadline_ms,
        ]
        return keys, args, stream_id

    async def _verdict(
        self, keys: list[str], args: list[Any], stream_id: str, reply: list[bytes]
    ) -> Verdict:
        over = reply[0].decode()
        if over == "runs":
            # At the limit: see which of the counted conversations still have a run.
            counted = [member.decode() for member in reply[1:]]
            active = await self._conversations.active_runs(counted)
            ended = [cid for cid, run in zip(counted, active, strict=True) if run is None]
            if ended:
                reply = await self._admit(keys=keys, args=args + ended)
                over = reply[0].decode()
        if over == "ok":
            return Admitted(StreamLease(keys[4], stream_id) if stream_id else None)
        if over in ("requests", "posts"):
            return Refusal(Over(over), int(reply[1]))
        return Refusal(Over(over))

    async def update_leases(self, ended: list[StreamLease], held: list[StreamLease] | None) -> None:
        """Drop the leases of streams that ended and, when ``held`` is given, renew those for
        another lease period; one round trip."""
        gone: dict[str, list[str]] = defaultdict(list)
        for lease in ended:
            gone[lease.key].append(lease.stream_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, ids in gone.items():
                pipe.zrem(key, *ids)
            if held:
                expiry = int(time.time() * 1000) + self._lease_ms
                renewed: dict[str, list[str]] = defaultdict(list)
                for lease in held:
                    renewed[lease.key].append(lease.stream_id)
                for key, ids in renewed.items():
                    pipe.zadd(key, dict.fromkeys(ids, expiry), xx=True)
                    pipe.pexpire(key, self._lease_ms)
            await pipe.execute()

    async def admit_write(self, subject: str, quota: WriteQuota) -> WriteRefusal | None:
        """Count one Durable Streams write of ``subject``; None when admitted. At the storage
        limit, the subject's streams are checked once and those gone are dropped first."""
        keys_of = self._keys.subject(subject)
        now = int(time.time() * 1000)
        minute, day = now // _MINUTE_MS, now // _DAY_MS
        keys = [
            keys_of.stream_messages(minute),
            keys_of.stream_messages(minute - 1),
            keys_of.storage,
            keys_of.streams_created(day),
        ]
        args: list[Any] = [
            now,
            quota.messages_per_minute,
            quota.messages,
            quota.storage_bytes,
            quota.size,
            quota.field,
            quota.streams_per_day,
        ]
        reply = await self._ds_admit_gathered(keys, args)
        if reply[0] == b"storage":
            gone = await self._gone_streams(keys_of.storage)
            if gone:
                reply = await self._ds_admit(keys=keys, args=args + gone)
        over = reply[0].decode()
        if over == "ok":
            return None
        if over == "messages":
            return WriteRefusal(WriteOver.MESSAGES, retry_after_ms=int(reply[1]))
        if over == "storage":
            return WriteRefusal(WriteOver.STORAGE, stored=int(reply[1]))
        return WriteRefusal(WriteOver(over))

    async def _gone_streams(self, storage: str) -> list[str]:
        """The fields of a storage hash whose stream incarnation no longer exists."""
        gone: list[str] = []
        cursor = 0
        while True:
            cursor, fields = await self._redis.hscan(storage, cursor, count=500)
            named = [f.decode() for f in fields if f]
            if named:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for field in named:
                        uid, _, name = field.partition(" ")
                        pipe.hget(self._keys.durable(name).meta, "uid")
                    uids = await pipe.execute()
                for field, uid in zip(named, uids, strict=True):
                    if uid is None or uid.decode() != field.partition(" ")[0]:
                        gone.append(field)
            if not cursor:
                return gone

    async def refund_write(
        self, subject: str, field: str, size: int | None, *, creation: bool = False
    ) -> None:
        """Give back ``size`` stored bytes of ``field`` (None: all of them, the stream is
        gone) and, with ``creation``, the day's creation it counted."""
        keys_of = self._keys.subject(subject)
        day = int(time.time() * 1000) // _DAY_MS
        await self._ds_refund(
            keys=[keys_of.storage, keys_of.streams_created(day)],
            args=[field, "all" if size is None else size, "1" if creation else ""],
        )
