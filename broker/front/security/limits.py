"""Limits per subject, counted in Redis so that every front enforces one limit, not one each.

All of a subject's counters share the hash tag of ``SubjectKeys`` and are touched by one script
(``ADMIT``) or by single-key commands, so they stay legal on Redis Cluster. A request pays one
script call, sent in the same pipeline as its access check; an SSE event pays nothing.

- Requests and posts per minute: a sliding window estimated from two fixed one-minute counters
  (the previous minute's count weighted by how much of it the window still covers).
- Open streams: a sorted set of stream ids scored by lease expiry. Each front renews the leases
  of all its open streams in one pipeline per interval and drops a stream's lease when it ends;
  the streams of a front that died stop counting when their leases run out.
- Active runs: a sorted set of the subject's conversations with a run, scored by the run's
  deadline. Nobody has to remember to remove one: a subject at its limit has its members checked
  against the conversations themselves (one more round trip, only then), and a member whose end
  is never seen expires with its deadline.
- Conversations created per UTC day: a counter, incremented in the round trip that checks the
  conversation before its first message is queued (``Limits.count_creation``).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import defaultdict
from enum import Enum
from typing import Any, NamedTuple

import anyio
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import Pipeline

from broker.core.settings import Settings
from broker.engine.keys import Keys
from broker.front.http.errors import ApiError
from broker.front.security.principal import Principal

log = logging.getLogger("broker.front.security.limits")

_MINUTE_MS = 60_000
_DAY_MS = 86_400_000
_RETRY_STREAMS_SECONDS = 5
_RETRY_RUNS_SECONDS = 5

# KEYS: requests this minute, requests last minute, posts this minute, posts last minute,
#       open streams, active runs
# ARGV: now_ms, requests limit, posts limit, streams limit, stream id, stream lease expiry ms,
#       runs limit, conversation id, run deadline ms, then conversations whose runs the front
#       has seen end. A limit of 0 is not checked (off, or not this kind of request). Counts
#       nothing unless the request is admitted. A refused rate answers with the milliseconds
#       until its sliding count falls below the limit, if nothing more comes.
ADMIT = """
local now = tonumber(ARGV[1])
local into = now % 60000
local function wait(current, previous, limit)
  if limit == 0 then return nil end
  local last = tonumber(redis.call('GET', previous) or '0')
  local this = tonumber(redis.call('GET', current) or '0')
  if last * (1 - into / 60000) + this < limit then return nil end
  if this < limit then
    return math.ceil(60000 * (1 - (limit - this) / last) - into) + 1
  end
  return math.ceil(60000 - into + 60000 * (1 - limit / this)) + 1
end
local requests, posts = tonumber(ARGV[2]), tonumber(ARGV[3])
local streams, runs = tonumber(ARGV[4]), tonumber(ARGV[7])
local waiting = wait(KEYS[1], KEYS[2], requests)
if waiting then return {'requests', waiting} end
waiting = wait(KEYS[3], KEYS[4], posts)
if waiting then return {'posts', waiting} end
if streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= streams then return {'streams'} end
end
if runs > 0 then
  for i = 10, #ARGV do redis.call('ZREM', KEYS[6], ARGV[i]) end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
  if not redis.call('ZSCORE', KEYS[6], ARGV[8]) and redis.call('ZCARD', KEYS[6]) >= runs then
    local members = redis.call('ZRANGE', KEYS[6], 0, -1)
    table.insert(members, 1, 'runs')
    return members
  end
end
if requests > 0 then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], 120000)
end
if posts > 0 then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], 120000)
end
if streams > 0 then
  redis.call('ZADD', KEYS[5], ARGV[6], ARGV[5])
  redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[6]) - now)
end
if runs > 0 then
  redis.call('ZADD', KEYS[6], ARGV[9], ARGV[8])
  redis.call('PEXPIRE', KEYS[6], tonumber(ARGV[9]) - now)
end
return {'ok'}
"""


class Cost(Enum):
    """What a route costs its subject, besides one request."""

    REQUEST = "request"
    STREAM = "stream"  # holds one of the subject's open streams until it ends
    POST = "post"  # one post, and a run of the conversation in the path


class Pending(NamedTuple):
    """An admission queued in a pipeline; ``Limits.settle`` turns its reply into a verdict."""

    args: list[Any]
    keys: list[str]
    stream_id: str | None


def _seconds_left(now_ms: int, period_ms: int) -> str:
    return str(max(1, math.ceil((period_ms - now_ms % period_ms) / 1000)))


class StreamLeases:
    """The leases of this front's open streams: renewed together, dropped when a stream ends.

    Renewals and drops go out in one pipeline per wake-up, from one task owned by the app's
    lifespan; ending a stream only records it, so it costs the stream's response nothing.
    """

    def __init__(self, redis: aioredis.Redis, lease_seconds: float) -> None:
        self._redis = redis
        self._lease_ms = int(lease_seconds * 1000)
        self._open: dict[str, str] = {}  # stream id -> its subject's streams key
        self._ended: list[tuple[str, str]] = []
        self._wakeup = anyio.Event()

    def hold(self, key: str, stream_id: str) -> None:
        self._open[stream_id] = key

    def release(self, stream_id: str) -> None:
        key = self._open.pop(stream_id, None)
        if key is not None:
            self._ended.append((key, stream_id))
            self._wakeup.set()

    @property
    def count(self) -> int:
        return len(self._open)

    async def run(self) -> None:
        renew_every = self._lease_ms / 3000
        next_renewal = anyio.current_time() + renew_every
        try:
            while True:
                with anyio.move_on_at(next_renewal):
                    await self._wakeup.wait()
                renew = anyio.current_time() >= next_renewal
                if renew:
                    next_renewal = anyio.current_time() + renew_every
                await self._flush(renew)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._flush(renew=False)

    async def _flush(self, renew: bool) -> None:
        self._wakeup = anyio.Event()
        ended, self._ended = self._ended, []
        if not ended and not (renew and self._open):
            return
        gone: dict[str, list[str]] = defaultdict(list)
        for key, stream_id in ended:
            gone[key].append(stream_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, ids in gone.items():
                pipe.zrem(key, *ids)
            if renew:
                expiry = int(time.time() * 1000) + self._lease_ms
                held: dict[str, list[str]] = defaultdict(list)
                for stream_id, key in self._open.items():
                    held[key].append(stream_id)
                for key, ids in held.items():
                    pipe.zadd(key, dict.fromkeys(ids, expiry), xx=True)
                    pipe.pexpire(key, self._lease_ms)
            try:
                await pipe.execute()
            except redis.exceptions.RedisError:
                # Dropped leases run out by themselves; the next renewal tries again.
                log.warning("could not update stream leases", exc_info=True)


class Limits:
    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._admit = redis.register_script(ADMIT)
        self.leases = StreamLeases(redis, settings.stream_lease_seconds)
        self._any = any(
            (
                settings.limit_requests_per_minute,
                settings.limit_posts_per_minute,
                settings.limit_streams_per_subject,
                settings.limit_active_runs_per_subject,
            )
        )

    def counts(self, principal: Principal) -> bool:
        """Whether ``queue`` counts anything for this principal (admins meet no limit)."""
        return self._any and not principal.admin

    async def queue(
        self, pipe: Pipeline, principal: Principal, cost: Cost, cid: str | None
    ) -> Pending | None:
        """Add the subject's admission to ``pipe``; None when nothing is counted."""
        if not self.counts(principal):
            return None
        settings = self._settings
        subject = self._keys.subject(principal.subject)
        now = int(time.time() * 1000)
        minute = now // _MINUTE_MS
        stream_id = uuid.uuid4().hex if cost is Cost.STREAM else None
        streams = settings.limit_streams_per_subject if stream_id else 0
        posting = cost is Cost.POST and cid is not None
        keys = [
            subject.requests(minute),
            subject.requests(minute - 1),
            subject.posts(minute),
            subject.posts(minute - 1),
            subject.streams,
            subject.runs,
        ]
        args: list[Any] = [
            now,
            settings.limit_requests_per_minute,
            settings.limit_posts_per_minute if posting else 0,
            streams,
            stream_id or "",
            now + int(settings.stream_lease_seconds * 1000),
            settings.limit_active_runs_per_subject if posting else 0,
            cid or "",
            now + int(settings.max_run_seconds * 2 * 1000),
        ]
        if streams == 0:
            stream_id = None
        await self._admit(keys=keys, args=args, client=pipe)  # queued; sent by the caller
        return Pending(args, keys, stream_id)

    async def settle(self, pending: Pending, reply: list[bytes]) -> str | None:
        """Raise the refusal, or return the id of the stream lease now held (if any)."""
        verdict = reply[0].decode()
        if verdict == "runs":
            # At the limit: see which of the counted conversations still have a run.
            counted = [member.decode() for member in reply[1:]]
            async with self._redis.pipeline(transaction=False) as pipe:
                for cid in counted:
                    pipe.hget(self._keys.conversation(cid).meta, "active_run")
                active = await pipe.execute()
            ended = [cid for cid, run in zip(counted, active, strict=True) if not run]
            if ended:
                reply = await self._admit(keys=pending.keys, args=pending.args + ended)
                verdict = reply[0].decode()
        if verdict == "ok":
            if pending.stream_id is not None:
                self.leases.hold(pending.keys[4], pending.stream_id)
            return pending.stream_id
        settings = self._settings
        if verdict in ("requests", "posts"):
            limit, what = (
                (settings.limit_requests_per_minute, "request")
                if verdict == "requests"
                else (settings.limit_posts_per_minute, "message")
            )
            what += "" if limit == 1 else "s"
            raise ApiError(
                429,
                "rate_limited",
                f"more than {limit} {what} a minute",
                {"Retry-After": str(max(1, math.ceil(int(reply[1]) / 1000)))},
            )
        if verdict == "streams":
            raise ApiError(
                429,
                "too_many_streams",
                f"{settings.limit_streams_per_subject} "
                f"{'stream is' if settings.limit_streams_per_subject == 1 else 'streams are'} "
                "open already; close one",
                {"Retry-After": str(_RETRY_STREAMS_SECONDS)},
            )
        raise ApiError(
            429,
            "too_many_runs",
            f"{settings.limit_active_runs_per_subject} "
            f"{'answer is' if settings.limit_active_runs_per_subject == 1 else 'answers are'} "
            "being generated already; "
            "wait for one to end or cancel it",
            {"Retry-After": str(_RETRY_RUNS_SECONDS)},
        )

    def counts_creation(self, principal: Principal) -> bool:
        return self._settings.limit_conversations_per_day > 0 and not principal.admin

    def count_creation(self, pipe: Pipeline, principal: Principal) -> None:
        """Count a conversation the principal is about to create, in the caller's pipeline;
        its replies go to ``check_creation``."""
        key = self._keys.subject(principal.subject).created(int(time.time() * 1000) // _DAY_MS)
        pipe.incr(key)
        pipe.expire(key, 2 * 86_400)

    def check_creation(self, replies: list[Any]) -> None:
        created = int(replies[0])
        limit = self._settings.limit_conversations_per_day
        if created > limit:
            raise ApiError(
                429,
                "too_many_conversations",
                f"more than {limit} new conversations today (UTC)",
                {"Retry-After": _seconds_left(int(time.time() * 1000), _DAY_MS)},
            )
