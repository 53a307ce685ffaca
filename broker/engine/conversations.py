"""The conversation store: every state change of a conversation, each one atomic in Redis.

Races live in a handful of transitions (accepting a run while none is active, a run's terminal
event, cancel against completion). Each is one Lua script over the keys of a single
conversation, all in one hash slot, so they stay legal on Redis Cluster and no two processes
can interleave inside them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from broker.core.ids import LAST_POSITION, StreamPos, format_stream_id, parse_stream_id
from broker.core.settings import Settings
from broker.engine.connections import UNAVAILABLE, Client, unavailable_errors
from broker.engine.keys import ConversationKeys, Keys
from broker.engine.live import DELETED_NOTICE, LUA_NOTICE

log = logging.getLogger("broker.engine.conversations")

# Every script that appends also publishes the live notice (see ``live``) on KEYS[4], the
# conversation's channel (KEYS[5] for ACCEPT), in the same atomic step, so the notice says
# exactly which entry the new ones follow.

# The terminal transition, shared by the worker's finish and the front's cancel of a queued run.
# Expects `status` (the run's current status) and writes ARGV[2] (new status), ARGV[3] (event
# name) and ARGV[4] (event data); KEYS are events, meta, run, live.
_TERMINATE = """
local after = newest()
local id = append(ARGV[5], ARGV[3], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[3], 'status', ARGV[2], 'terminal_event_id', id)
if redis.call('HGET', KEYS[2], 'active_run') == ARGV[1] then
  redis.call('HSET', KEYS[2], 'active_run', '')
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[6]) end
notify(KEYS[4], after)
return {'ok', ARGV[2], id}
"""

_FINAL_OR_MISSING = """
local status = redis.call('HGET', KEYS[3], 'status')
if not status then return {'missing'} end
if status == 'completed' or status == 'cancelled' or status == 'failed' then
  return {'final', status, redis.call('HGET', KEYS[3], 'terminal_event_id') or ''}
end
"""

# KEYS: events, meta, run, idempotency, live
# ARGV: run_id, message_id, assistant_message_id, model, data, maxlen, ttl_ms, idem_ttl_ms,
#       idempotency record ('' when the request carries no key), subject ('' when nobody owns
#       conversations: BROKER_AUTH=none), '1' when the subject may write every conversation,
#       title (the conversation's title, kept if this message creates it), the run's job entry
# The first message creates the conversation and records its subject as the owner, in this one
# step: of many subjects racing to create one id, exactly one owns it and the others are refused
# here, before anything is written. A conversation created with no owner has no owner to match.
# The meta hash names every other key the conversation has (a field `key:<name>` each), so a
# deletion finds them all without scanning the keyspace; it lives as long as they do.
ACCEPT = """
if ARGV[10] ~= '' and ARGV[11] ~= '1' then
  local owner = redis.call('HGET', KEYS[2], 'owner')
  if owner ~= ARGV[10] and (owner or redis.call('HEXISTS', KEYS[2], 'first_id') == 1) then
    return {'not_owner'}
  end
end
if ARGV[9] ~= '' then
  local previous = redis.call('GET', KEYS[4])
  if previous then return {'replay', previous} end
end
-- This very accept already ran (repeated after a lost reply): answer as it did.
local accepted = redis.call('HGET', KEYS[3], 'message_event_id')
if accepted then return {'ok', accepted, redis.call('HGET', KEYS[2], 'owner') or ''} end
local active = redis.call('HGET', KEYS[2], 'active_run')
if active and active ~= '' then return {'run_active', active} end
-- A worker gave up waiting for this run and dropped its job: the run must not start now.
if redis.call('EXISTS', KEYS[3]) == 1 then return {'orphaned'} end
local after = newest()
local id = append(ARGV[6], 'message', ARGV[5], ARGV[1])
redis.call('HSET', KEYS[2], 'active_run', ARGV[1])
if redis.call('HSETNX', KEYS[2], 'first_id', id) == 1 then
  redis.call('HSET', KEYS[2], 'title', ARGV[12])
  if ARGV[10] ~= '' then redis.call('HSET', KEYS[2], 'owner', ARGV[10]) end
end
redis.call('HSET', KEYS[2], 'key:' .. KEYS[3], '')
if ARGV[9] ~= '' then redis.call('HSET', KEYS[2], 'key:' .. KEYS[4], '') end
redis.call('HSET', KEYS[3], 'status', 'queued', 'message_id', ARGV[2],
           'assistant_message_id', ARGV[3], 'model', ARGV[4], 'message_event_id', id,
           'job_entry', ARGV[13])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
if ARGV[9] ~= '' then
  redis.call('SET', KEYS[4], ARGV[9] .. '\\n' .. id, 'PX', ARGV[8])
end
notify(KEYS[5], after)
return {'ok', id, redis.call('HGET', KEYS[2], 'owner') or ''}
"""

# Fencing. A started run has an owner (the worker that holds its lease, in `worker`), the job
# entry that lease is on (`job`), and an epoch (`epoch`), raised whenever the run changes hands.
# Every write of a run's output checks owner and epoch in the same script that writes, so a
# worker whose run was taken over (it was paused past its lease, say) can write nothing more.
_FENCED = """
if redis.call('HGET', KEYS[3], 'worker') ~= ARGV[%(worker)d]
   or redis.call('HGET', KEYS[3], 'epoch') ~= ARGV[%(epoch)d] then
  return {'fenced'}
end
"""

# KEYS: events, meta, run, live. ARGV: run_id, worker, data, maxlen, ttl_ms, orphan ('1' or
# '0'), job
# Starts a queued run under a new epoch and answers {'ok', run.started id, epoch}. Repeating it
# (a retry after a lost reply) answers as the first call did; another job entry of the same run
# (a duplicate) or another worker is refused with the run's status. The front queues a job just
# before it accepts the run, so a worker may see the job first: 'missing' then means "not yet".
# With orphan = '1' the worker gives up on it, and the run can never be accepted. The run
# remembers its newest entry (`last_id`): while it runs, only its owner appends.
START = """
local status = redis.call('HGET', KEYS[3], 'status')
if (status == 'running' or status == 'cancelling')
   and redis.call('HGET', KEYS[3], 'worker') == ARGV[2]
   and redis.call('HGET', KEYS[3], 'job') == ARGV[7] then
  return {'ok', redis.call('HGET', KEYS[3], 'started_event_id'), redis.call('HGET', KEYS[3], 'epoch')}
end
if not status and ARGV[6] == '1' then
  redis.call('HSET', KEYS[3], 'status', 'orphaned')
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  return {'orphaned'}
end
if status ~= 'queued' then return {status or 'missing'} end
local after = newest()
local id = append(ARGV[4], 'run.started', ARGV[3], ARGV[1])
local epoch = redis.call('HINCRBY', KEYS[3], 'epoch', 1)
redis.call('HSET', KEYS[3], 'status', 'running', 'worker', ARGV[2], 'job', ARGV[7],
           'started_event_id', id, 'last_id', id)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
notify(KEYS[4], after)
return {'ok', id, tostring(epoch)}
"""

# KEYS: events, meta, run. ARGV: run_id, worker, job
# A worker claimed a job whose lease lapsed: if that job holds a started run, the run changes
# hands (a new epoch) so that its old owner is fenced off, and the new owner ends it. Answers
# {'taken', status, epoch}, also to a repeat; a job that is not the run's lease (a duplicate)
# takes nothing.
TAKE_OVER = """
local status = redis.call('HGET', KEYS[3], 'status')
if status ~= 'running' and status ~= 'cancelling' then return {status or 'missing'} end
if redis.call('HGET', KEYS[3], 'job') ~= ARGV[3] then return {'other_job'} end
if redis.call('HGET', KEYS[3], 'worker') == ARGV[2] then
  return {'taken', status, redis.call('HGET', KEYS[3], 'epoch')}
end
local epoch = redis.call('HINCRBY', KEYS[3], 'epoch', 1)
redis.call('HSET', KEYS[3], 'worker', ARGV[2])
return {'taken', status, tostring(epoch)}
"""

# KEYS: events, meta, run, live. ARGV: run_id, maxlen, ttl_ms, sequence, worker, epoch,
# refresh ('1': renew the idle TTL), then (name, data) pairs. Appends nothing unless the caller
# owns the run at its epoch and the run is still running: no output lands after a take-over,
# a cancel request or a terminal event. The sequence number (1, 2, ... per run) makes a
# retried append that had in fact been applied a no-op, so a lost reply never duplicates
# output. This is the hot path: one read of the run's hash (the fence, the status, the
# sequence, the newest entry), the entries, one write of the hash, the notice; the TTL is
# renewed only when the caller asks (every few seconds of a long run, not every append). A run
# whose hash is gone (its conversation was deleted) answers 'missing' and writes nothing.
APPEND = """
local state = redis.call('HMGET', KEYS[3], 'worker', 'epoch', 'status', 'appended', 'last_id')
if not state[3] then return {'missing'} end
if state[1] ~= ARGV[5] or state[2] ~= ARGV[6] then return {'fenced'} end
local status = state[3]
if tonumber(state[4] or '0') >= tonumber(ARGV[4]) then return {status or 'missing'} end
if status ~= 'running' then return {status or 'missing'} end
local after = state[5] or newest()
local id
for i = 8, #ARGV, 2 do id = append(ARGV[2], ARGV[i], ARGV[i + 1], ARGV[1]) end
redis.call('HSET', KEYS[3], 'appended', ARGV[4], 'last_id', id)
if ARGV[7] == '1' then
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
notify(KEYS[4], after)
return {'running'}
"""

# KEYS: events, meta, run, live. ARGV: run_id, status, name, data, maxlen, ttl_ms, worker, epoch
# The owner's terminal event, under its fence. With no owner given (worker ''), only a run
# that no worker has started can be ended (a worker failing before it started the run).
FINISH = (
    _FINAL_OR_MISSING
    + """
if ARGV[7] == '' then
  if status ~= 'queued' then return {'fenced'} end
else
"""
    + _FENCED % {"worker": 7, "epoch": 8}
    + """
end
"""
    + _TERMINATE
)

# KEYS: events, meta, run, live. ARGV: run_id, 'cancelled', 'run.cancelled', data, maxlen,
# ttl_ms. A queued run (no worker has it) is ended here and now; a running one is marked so
# that its worker stops at its next append even if the control message never reaches it. The
# answer names that worker, whose control channel the front then tells.
CANCEL = (
    _FINAL_OR_MISSING
    + """
if status == 'running' then
  redis.call('HSET', KEYS[3], 'status', 'cancelling')
end
if status ~= 'queued' then return {'cancelling', redis.call('HGET', KEYS[3], 'worker') or ''} end
"""
    + _TERMINATE
)


# KEYS: events, meta, live, then every key the meta hash names. ARGV: the deletion notice.
# Deletes the whole conversation in one step and tells its streams (see ``live``); answers
# {'deleted', owner} ('' when nobody owns it), or {'missing'}, or {'changed'} when the meta
# hash names a key the caller did not pass (a message arrived since it read them: read again).
DELETE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then return {'missing'} end
local passed = {}
for i = 4, #KEYS do passed[KEYS[i]] = true end
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(field, 1, 4) == 'key:' and not passed[string.sub(field, 5)] then
    return {'changed'}
  end
end
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
redis.call('DEL', KEYS[1], KEYS[2])
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('{publish}', KEYS[3], ARGV[1])
return {'deleted', owner}
"""


def script_text(body: str, *, cluster: bool) -> str:
    """A script as it runs: the notice helpers, publishing with SPUBLISH on a cluster."""
    return (LUA_NOTICE + body).replace("{publish}", "SPUBLISH" if cluster else "PUBLISH")


class Accepted(NamedTuple):
    outcome: str  # 'ok', 'run_active', 'replay', 'orphaned' or 'not_owner'
    event_id: str = ""
    active_run: str = ""
    idempotency_record: str = ""
    owner: str = ""  # 'ok': the subject who owns the conversation ('' for nobody)


class Owner(NamedTuple):
    """Who writes: ``subject`` becomes the owner of a conversation it creates, and may write
    only conversations it owns, unless ``admin``. An empty subject owns and checks nothing."""

    subject: str = ""
    admin: bool = False


NOBODY = Owner()


class Transition(NamedTuple):
    """What a state-changing script did: its outcome, the run's status, the event it wrote."""

    outcome: str  # 'ok', 'final', 'missing', 'cancelling', 'fenced', or the refusing status
    status: str = ""
    event_id: str = ""
    worker: str = ""  # 'cancelling': the worker that owns the run


class Fence(NamedTuple):
    """The right to write a started run's output: its owner, at the epoch it got the run."""

    worker: str
    epoch: str


class Started(NamedTuple):
    outcome: str  # 'ok', or why not: 'missing', 'orphaned', or the run's status
    event_id: str = ""
    fence: Fence | None = None


class TakenOver(NamedTuple):
    outcome: str  # 'taken', or why not: 'other_job', 'missing', or the run's status
    status: str = ""  # the run's status when taken: 'running' or 'cancelling'
    fence: Fence | None = None


def _text(values: list[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class Store:
    """State changes and reads of conversations, over one Redis client owned by the caller.

    ``retry_seconds`` > 0 (the workers) retries the run transitions through a Redis outage of
    up to that long; each of them is safe to repeat. The front tier answers 503 instead.
    """

    def __init__(self, redis: Client, settings: Settings, *, retry_seconds: float = 0) -> None:
        self.redis = redis
        self.cluster = settings.redis_cluster
        # The (repeatable) run transitions retry a torn-down cluster connection like an outage.
        self._unavailable = unavailable_errors(settings.redis_cluster)
        self._retry_seconds = retry_seconds
        self.keys = Keys(settings.key_prefix, settings.job_shard_count)
        self._maxlen = settings.stream_maxlen
        self._ttl_ms = settings.idle_ttl_seconds * 1000
        self._idem_ttl_ms = settings.idempotency_ttl_seconds * 1000
        # A conversation lives at most this long after its latest message: the idle TTL,
        # renewed until its run ends.
        self._index_ttl_ms = int((settings.idle_ttl_seconds + settings.max_run_seconds) * 1000)
        # How often a running generation renews its conversation's idle TTL.
        self.ttl_refresh_seconds = min(60.0, settings.idle_ttl_seconds / 4)

        def script(body: str) -> AsyncScript:
            return redis.register_script(script_text(body, cluster=settings.redis_cluster))

        self._accept = script(ACCEPT)
        self._start = script(START)
        self._append = script(APPEND)
        self._finish = script(FINISH)
        self._take_over = script(TAKE_OVER)
        self._cancel = script(CANCEL)
        self._delete = script(DELETE)

    def conversation(self, cid: str) -> ConversationKeys:
        return self.keys.conversation(cid)

    def _run_keys(self, cid: str, run_id: str) -> list[str]:
        keys = self.conversation(cid)
        return [keys.events, keys.meta, keys.run(run_id), keys.live]

    async def accept(
        self,
        cid: str,
        *,
        run_id: str,
        message_id: str,
        assistant_message_id: str,
        model: str,
        data: bytes,
        idempotency_key: str | None,
        idempotency_record: str,
        owner: Owner = NOBODY,
        title: str = "",
        job_entry: str = "",
    ) -> Accepted:
        """Append the user's message and open a run, unless another run is active or the
        conversation is somebody else's."""
        keys = self.conversation(cid)
        idem_key = keys.idempotency(idempotency_key or "-")
        result = _text(
            await self._accept(
                keys=[keys.events, keys.meta, keys.run(run_id), idem_key, keys.live],
                args=[
                    run_id,
                    message_id,
                    assistant_message_id,
                    model,
                    data,
                    self._maxlen,
                    self._ttl_ms,
                    self._idem_ttl_ms,
                    idempotency_record if idempotency_key else "",
                    owner.subject,
                    "1" if owner.admin else "0",
                    title,
                    job_entry,
                ],
            )
        )
        if result[0] == "ok":
            return Accepted("ok", event_id=result[1], owner=result[2])
        if result[0] == "run_active":
            return Accepted("run_active", active_run=result[1])
        if result[0] in ("orphaned", "not_owner"):
            return Accepted(result[0])
        return Accepted("replay", idempotency_record=result[1])

    async def precheck(
        self,
        cid: str,
        idempotency_key: str | None,
        owner: Owner = NOBODY,
        also: Callable[[Pipeline], None] | None = None,
    ) -> tuple[Accepted | None, list[Any]]:
        """What ``accept`` would refuse right now, read without writing; None if nothing.

        Lets the front refuse a stranger, a retry or a conflict before it queues a job. ``also``
        adds the caller's own commands to the same round trip; their replies come second.
        """
        keys = self.conversation(cid)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.meta, ["active_run", "owner", "first_id"])
            pipe.get(keys.idempotency(idempotency_key or "-"))
            if also is not None:
                also(pipe)
            (active, owned_by, first_id), record, *rest = await pipe.execute()
        if (
            owner.subject
            and not owner.admin
            and (owned_by or first_id)
            and (owned_by is None or owned_by.decode() != owner.subject)
        ):
            return Accepted("not_owner"), rest
        if idempotency_key and record:
            return Accepted("replay", idempotency_record=record.decode()), rest
        if active:
            return Accepted("run_active", active_run=active.decode()), rest
        return None, rest

    async def _run_script(
        self, script: AsyncScript, cid: str, run_id: str, args: list[Any]
    ) -> list[str]:
        """Run a repeatable run transition, through a Redis outage of up to retry_seconds."""
        keys = self._run_keys(cid, run_id)
        deadline: float | None = None  # set at the first failure: the happy path reads no clock
        delay = 0.05
        while True:
            try:
                return _text(await script(keys=keys, args=args))
            except self._unavailable:
                now = time.monotonic()
                deadline = deadline or now + self._retry_seconds
                if now + delay > deadline:
                    raise
                log.warning("Redis unreachable; retrying run %s in %.2fs", run_id, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def start_run(
        self,
        cid: str,
        run_id: str,
        worker: str,
        job: str,
        data: bytes,
        *,
        orphan_if_missing: bool = False,
    ) -> Started:
        """Start a queued run for ``worker``, whose lease is on job entry ``job``; the fence
        it returns is what every later write of the run's output must carry."""
        args = [run_id, worker, data, self._maxlen, self._ttl_ms, int(orphan_if_missing), job]
        result = await self._run_script(self._start, cid, run_id, args)
        if result[0] == "ok":
            return Started("ok", result[1], Fence(worker, result[2]))
        return Started(result[0])

    async def take_over(self, cid: str, run_id: str, worker: str, job: str) -> TakenOver:
        """Take a started run whose lease (on job entry ``job``) lapsed, to end it."""
        result = await self._run_script(self._take_over, cid, run_id, [run_id, worker, job])
        if result[0] == "taken":
            return TakenOver("taken", result[1], Fence(worker, result[2]))
        return TakenOver(result[0])

    async def append(
        self,
        cid: str,
        run_id: str,
        fence: Fence,
        sequence: int,
        events: list[tuple[str, bytes]],
        *,
        refresh_ttl: bool = True,
    ) -> str:
        """Append a run's output as its ``sequence``-th write (from 1); returns the run's status
        ('running' when it was written), or 'fenced' when the run is no longer ``fence``'s.
        ``refresh_ttl`` also renews the conversation's idle TTL."""
        args: list[Any] = [run_id, self._maxlen, self._ttl_ms, sequence, *fence, int(refresh_ttl)]
        for name, data in events:
            args += (name, data)
        return (await self._run_script(self._append, cid, run_id, args))[0]

    async def finish(
        self, cid: str, run_id: str, fence: Fence | None, status: str, name: str, data: bytes
    ) -> Transition:
        """Write the run's terminal event unless it has one already: one terminal per run.

        Only the owner at ``fence`` may; with no fence, only while no worker started the run.
        """
        owner = fence or Fence("", "")
        result = await self._run_script(
            self._finish,
            cid,
            run_id,
            [run_id, status, name, data, self._maxlen, self._ttl_ms, *owner],
        )
        return Transition(*result)

    async def cancel(self, cid: str, run_id: str, data: bytes) -> Transition:
        result = _text(
            await self._cancel(
                keys=self._run_keys(cid, run_id),
                args=[run_id, "cancelled", "run.cancelled", data, self._maxlen, self._ttl_ms],
            )
        )
        if result[0] == "cancelling":
            return Transition("cancelling", worker=result[1])
        return Transition(*result)

    async def tell_worker(self, worker: str, message: bytes) -> None:
        """Publish on one worker's control channel (sharded pub/sub on a cluster)."""
        channel = self.keys.control(worker)
        if self.cluster:
            await self.redis.spublish(channel, message)
        else:
            await self.redis.publish(channel, message)

    async def add_notice(self, data: bytes, maxlen: int) -> None:
        """Add a finished run's notice to the outbox (see ``broker.engine.outbox``), retried
        through a Redis outage like the run transitions; the cap trims the oldest notices."""
        deadline: float | None = None
        delay = 0.05
        while True:
            try:
                await self.redis.xadd(
                    self.keys.outbox, {b"n": data}, maxlen=maxlen, approximate=True
                )
                return
            except UNAVAILABLE:
                now = time.monotonic()
                deadline = deadline or now + self._retry_seconds
                if now + delay > deadline:
                    raise
                log.warning("Redis unreachable; retrying a run's notice in %.2fs", delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def index(self, subject: str, cid: str, at_ms: int) -> None:
        """Record in its owner's index that ``cid`` had a message at ``at_ms``.

        The index is in another hash slot than the conversation, so this is a command of its
        own after ACCEPT; ZADD GT makes a repeat or a late arrival harmless. The index lives
        as long as its newest conversation may (its TTL renewed here), and its entries older
        than that are trimmed; entries of conversations that expired sooner are skipped and
        removed when listed."""
        key = self.keys.owned(subject)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {cid: at_ms}, gt=True)
            pipe.zremrangebyscore(key, "-inf", at_ms - self._index_ttl_ms)
            pipe.pexpire(key, self._index_ttl_ms)
            await pipe.execute()

    async def delete(self, cid: str) -> str | None:
        """Delete every key of ``cid`` and end its streams; returns the subject that owned it
        ('' for nobody), or None when it does not exist."""
        keys = self.conversation(cid)
        while True:
            fields = await self.redis.hkeys(keys.meta)
            named = [f.decode()[4:] for f in fields if f.startswith(b"key:")]
            if fields and not named:
                named = await self._scan_keys(keys)  # created before the meta named its keys
            result = _text(
                await self._delete(
                    keys=[keys.events, keys.meta, keys.live, *named], args=[DELETED_NOTICE]
                )
            )
            if result[0] == "missing":
                return None
            if result[0] == "deleted":
                owner = result[1]
                await self.redis.zrem(self.keys.owned(owner), cid)
                return owner

    async def _scan_keys(self, keys: ConversationKeys) -> list[str]:
        """The run and idempotency keys of a conversation, found by scanning the keyspace."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", keys.base) + ":*"
        fixed = {keys.events, keys.meta}
        found = [key.decode() async for key in self.redis.scan_iter(match=pattern, count=1000)]
        return [key for key in found if key not in fixed]

    async def exists(self, cid: str) -> bool:
        keys = self.conversation(cid)
        return bool(await self.redis.exists(keys.events, keys.meta))

    async def active_run(self, cid: str) -> str | None:
        value = await self.redis.hget(self.conversation(cid).meta, "active_run")
        return value.decode() if value else None

    async def run_info(self, cid: str, run_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.conversation(cid).run(run_id))
        return {k.decode(): v.decode() for k, v in raw.items()} if raw else None

    async def is_stored(self, cid: str, position: StreamPos) -> bool:
        """Whether the entry at ``position`` is (still) in the stream."""
        at = format_stream_id(position)
        return bool(await self.redis.xrange(self.conversation(cid).events, min=at, max=at, count=1))

    async def earliest(self, cid: str) -> StreamPos | None:
        """The oldest retained entry's position, or None for an empty stream."""
        first = await self.redis.xrange(self.conversation(cid).events, count=1)
        return parse_stream_id(first[0][0]) if first else None

    async def read_after(
        self, cid: str, after: StreamPos, count: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries strictly after ``after``, oldest first, at most ``count``."""
        if after == LAST_POSITION:
            return []  # nothing can follow it, and Redis refuses an exclusive start there
        return await self.redis.xrange(
            self.conversation(cid).events, min="(" + format_stream_id(after), max="+", count=count
        )
