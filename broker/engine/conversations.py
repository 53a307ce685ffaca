"""Conversations: every state change of a conversation, each one atomic in Redis, and its reads.

Races live in a handful of transitions (accepting a run while none is active, a run's terminal
event, cancel against completion). Each is one Lua script (``lua/*.lua``) over the keys of a
single conversation, all in one hash slot, so they stay legal on Redis Cluster and no two
processes can interleave inside them. Every script that appends also publishes the live notice
(``live``) on the conversation's channel in the same atomic step, so the notice says exactly
which entry the new ones follow. A script's answer is decoded here, into the outcome types
below; nothing outside the engine reads a script's words.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple, TypeVar

import anyio

from broker.core.bodies import Snapshot
from broker.core.entries import Entry
from broker.core.events import TERMINAL_STATES, RunState
from broker.core.ids import LAST_POSITION, ORIGIN, StreamPos, format_stream_id, parse_stream_id
from broker.core.settings import Settings
from broker.core.snapshot import SnapshotFold
from broker.engine.connections import FULL, Client, unavailable_errors
from broker.engine.entries import RUN, entries
from broker.engine.gathered import Gathered
from broker.engine.keys import ConversationKeys, Keys
from broker.engine.live import DELETED_NOTICE
from broker.engine.scripts import Scripts

log = logging.getLogger(__name__)
T = TypeVar("T")


class Owner(NamedTuple):
    """Who writes: ``subject`` becomes the owner of a conversation it creates, and may write
    only conversations it owns, unless ``admin``. An empty subject owns and checks nothing."""

    subject: str = ""
    admin: bool = False


NOBODY = Owner()


class Fence(NamedTuple):
    """The right to write a started run's output: its owner, at the epoch it got the run."""

    worker: str
    epoch: str


# -- outcomes ----------------------------------------------------------------------------------


class Refused(Enum):
    """Why a transition wrote nothing, when no more needs saying."""

    NOT_OWNER = "not_owner"  # the conversation is somebody else's
    ORPHANED = "orphaned"  # a worker gave up waiting for this run: it can never start
    TOO_LATE = "too_late"  # past its accept deadline: its job may be gone
    FENCED = "fenced"  # the run is another worker's now
    MISSING = "missing"  # no such run


@dataclass(frozen=True, slots=True)
class Accepted:
    """The message is stored and its run queued; ``owner`` owns the conversation ('' nobody)."""

    event_id: str
    owner: str


@dataclass(frozen=True, slots=True)
class RunActive:
    """Another run of the conversation has not ended."""

    run_id: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The idempotency key was used before: ``record`` is what the first request stored."""

    record: str


AcceptOutcome = Accepted | RunActive | Replay | Refused


@dataclass(frozen=True, slots=True)
class Started:
    """The run is this worker's, under ``fence``; ``event_id`` is its ``run.started``."""

    event_id: str
    fence: Fence


@dataclass(frozen=True, slots=True)
class TakenOver:
    """A lapsed started run is this worker's now, to end it; ``state`` is running or
    cancelling."""

    state: RunState
    fence: Fence


class Appended(Enum):
    WRITTEN = "written"
    CANCEL_REQUESTED = "cancel_requested"  # marked for cancel: stop, write the terminal event
    FENCED = "fenced"  # another worker took the run over: write nothing more
    ENDED = "ended"  # something else ended it (or deleted its conversation)


@dataclass(frozen=True, slots=True)
class Ended:
    """The run has its terminal event; ``just_now`` when this call wrote it."""

    state: RunState
    event_id: str
    just_now: bool


@dataclass(frozen=True, slots=True)
class Cancelling:
    """The run is marked for cancel; ``worker`` runs it (its control channel is told)."""

    worker: str


@dataclass(frozen=True, slots=True)
class Deleted:
    """A deleted conversation: who owned it ('' nobody), and its runs no worker had started,
    with their job entries, (run id, entry id): jobs to withdraw."""

    owner: str
    unstarted: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What Redis keeps of a run."""

    state: RunState
    model: str
    message_event_id: str
    assistant_message_id: str
    terminal_event_id: str  # '' until it ended
    worker: str  # '' until a worker started it
    job_entry: str  # the jobs-stream entry queued for it

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES


class Positions(NamedTuple):
    """What deciding where a reader resumes needs, read in one round trip."""

    first_id: StreamPos | None  # the conversation's first entry ever (trimmed or not)
    earliest: StreamPos  # the oldest entry retained
    latest: StreamPos  # the newest entry
    held_is_stored: bool  # the position the reader holds is an entry of the stream


@dataclass(frozen=True, slots=True)
class Summary:
    """What the conversations list shows of one conversation."""

    first: StreamPos
    title: str
    active_run: str | None
    owner: str


def _text(values: list[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _appended(answer: str) -> Appended:
    if answer == "running":
        return Appended.WRITTEN
    if answer == "cancelling":
        return Appended.CANCEL_REQUESTED
    if answer == "fenced":
        return Appended.FENCED
    return Appended.ENDED


def _ended(answer: list[str]) -> Ended | None:
    """``{'ok' | 'final', status, id}``, the answer of a run that has (or just got) its end."""
    if answer[0] in ("ok", "final"):
        return Ended(RunState(answer[1]), answer[2], just_now=answer[0] == "ok")
    return None


class Conversations:
    """State changes and reads of conversations.

    ``retry_seconds`` > 0 (the workers) retries the run transitions through a Redis outage of
    up to that long; each of them is safe to repeat. The front tier answers 503 instead.
    """

    def __init__(
        self,
        client: Client,
        keys: Keys,
        scripts: Scripts,
        settings: Settings,
        *,
        retry_seconds: float = 0,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        # The appends of a worker's runs that fall due together go out in one pipeline.
        self._append = Gathered(client, scripts.append)
        # The (repeatable) run transitions retry a torn-down cluster connection like an outage.
        self._unavailable = unavailable_errors(settings.redis_cluster)
        self._retry_seconds = retry_seconds
        self._maxlen = settings.stream_maxlen
        self._ttl_ms = settings.idle_ttl_seconds * 1000
        self._idem_ttl_ms = settings.idempotency_ttl_seconds * 1000
        self._batch = settings.replay_batch
        # How often a running generation renews its conversation's idle TTL.
        self.ttl_refresh_seconds = min(60.0, settings.idle_ttl_seconds / 4)

    def _conversation(self, cid: str) -> ConversationKeys:
        return self._keys.conversation(cid)

    def _run_keys(self, cid: str, run_id: str) -> list[str]:
        keys = self._conversation(cid)
        return [keys.events, keys.meta, keys.run(run_id), keys.live]

    def channel(self, cid: str) -> bytes:
        """The pub/sub channel of the conversation's live notices."""
        return self._conversation(cid).live.encode()

    async def retried(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Run a repeatable write through a Redis outage (or a full Redis) of up to
        ``retry_seconds``."""
        deadline: float | None = None  # set at the first failure: the happy path reads no clock
        delay = 0.05
        while True:
            try:
                return await call()
            except self._unavailable as exc:
                now = time.monotonic()
                deadline = deadline or now + self._retry_seconds
                if now + delay > deadline:
                    raise
                why = (
                    "Redis refuses writes (maxmemory)"
                    if isinstance(exc, FULL)
                    else ("Redis unreachable")
                )
                log.warning("%s; retrying %s in %.2fs", why, what, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _run_script(self, script: Any, cid: str, run_id: str, args: list[Any]) -> list[str]:
        keys = self._run_keys(cid, run_id)
        return await self.retried(lambda: self._answer(script, keys, args), f"run {run_id}")

    @staticmethod
    async def _answer(script: Any, keys: list[str], args: list[Any]) -> list[str]:
        return _text(await script(keys=keys, args=args))

    # -- accepting a message ---------------------------------------------------------------

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
        deadline_ms: int = 2**62,
    ) -> AcceptOutcome:
        """Append the user's message and open a run, unless another run is active, the
        conversation is somebody else's, or it is past ``deadline_ms`` (Unix ms, Redis's clock:
        see ``accept.lua``)."""
        keys = self._conversation(cid)
        idem_key = keys.idempotency(idempotency_key or "-")
        answer = await self._answer(
            self._scripts.accept,
            [keys.events, keys.meta, keys.run(run_id), idem_key, keys.live],
            [
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
                deadline_ms,
            ],
        )
        match answer[0]:
            case "ok":
                return Accepted(answer[1], answer[2])
            case "run_active":
                return RunActive(answer[1])
            case "replay":
                return Replay(answer[1])
            case _:
                return Refused(answer[0])

    async def precheck(
        self,
        cid: str,
        idempotency_key: str | None,
        owner: Owner = NOBODY,
        *,
        created_counter: str | None = None,
    ) -> tuple[RunActive | Replay | Refused | None, int | None]:
        """What ``accept`` would refuse right now, read without writing (None: nothing), and,
        in the same round trip, the count of ``created_counter`` once incremented (see
        ``Limits.creation_counter``): a front refuses a stranger, a retry or a conflict before
        it queues a job, and counts a new conversation only then."""
        keys = self._conversation(cid)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.meta, ["active_run", "owner", "first_id"])
            pipe.get(keys.idempotency(idempotency_key or "-"))
            if created_counter is not None:
                pipe.incr(created_counter)
                pipe.expire(created_counter, 2 * 86_400)
            (active, owned_by, first_id), record, *counted = await pipe.execute()
        created = int(counted[0]) if counted else None
        if (
            owner.subject
            and not owner.admin
            and (owned_by or first_id)
            and (owned_by is None or owned_by.decode() != owner.subject)
        ):
            return Refused.NOT_OWNER, created
        if idempotency_key and record:
            return Replay(record.decode()), created
        if active:
            return RunActive(active.decode()), created
        return None, created

    # -- a run's life ------------------------------------------------------------------------

    async def start_run(
        self,
        cid: str,
        run_id: str,
        worker: str,
        job: str,
        data: bytes,
        *,
        orphan_if_missing: bool = False,
    ) -> Started | RunState:
        """Start a queued run for ``worker``, whose lease is on job entry ``job``; the fence
        it returns is what every later write of the run's output must carry. Otherwise the
        run's state says why not (``MISSING``: not accepted yet; ``ORPHANED``: given up)."""
        args = [run_id, worker, data, self._maxlen, self._ttl_ms, int(orphan_if_missing), job]
        answer = await self._run_script(self._scripts.start, cid, run_id, args)
        if answer[0] == "ok":
            return Started(answer[1], Fence(worker, answer[2]))
        return RunState(answer[0])

    async def take_over(self, cid: str, run_id: str, worker: str, job: str) -> TakenOver | None:
        """Take a started run whose lease (on job entry ``job``) lapsed, to end it; None when
        the job holds no started run (a duplicate job, or a run that is not running)."""
        answer = await self._run_script(self._scripts.take_over, cid, run_id, [run_id, worker, job])
        if answer[0] == "taken":
            return TakenOver(RunState(answer[1]), Fence(worker, answer[2]))
        return None

    async def append(
        self,
        cid: str,
        run_id: str,
        fence: Fence,
        sequence: int,
        events: list[tuple[str, bytes]],
        *,
        refresh_ttl: bool = True,
    ) -> Appended:
        """Append a run's output as its ``sequence``-th write (from 1); ``refresh_ttl`` also
        renews the conversation's idle TTL.

        Appends that other tasks make at the same moment (the runs of a worker whose
        coalescing windows close together) go to Redis in one pipeline.
        """
        args: list[Any] = [run_id, self._maxlen, self._ttl_ms, sequence, *fence, int(refresh_ttl)]
        for name, data in events:
            args += (name, data)
        answer = await self._run_script(self._append, cid, run_id, args)
        return _appended(answer[0])

    async def finish(
        self, cid: str, run_id: str, fence: Fence | None, state: RunState, name: str, data: bytes
    ) -> Ended | Refused:
        """Write the run's terminal event unless it has one already: one terminal per run.

        Only the owner at ``fence`` may; with no fence, only while no worker started the run.
        """
        owner = fence or Fence("", "")
        answer = await self._run_script(
            self._scripts.finish,
            cid,
            run_id,
            [run_id, state.value, name, data, self._maxlen, self._ttl_ms, *owner],
        )
        return _ended(answer) or Refused(answer[0])

    async def cancel(self, cid: str, run_id: str, data: bytes) -> Ended | Cancelling | Refused:
        """End a queued run now, or mark a running one for cancel (its worker stops at its next
        append, told or not); ``Refused.MISSING`` for no such run."""
        answer = await self._answer(
            self._scripts.cancel,
            self._run_keys(cid, run_id),
            [run_id, data, self._maxlen, self._ttl_ms],
        )
        if answer[0] == "cancelling":
            return Cancelling(answer[1])
        return _ended(answer) or Refused(answer[0])

    async def delete(self, cid: str) -> Deleted | None:
        """Delete every key of ``cid`` and end its streams; None when it does not exist."""
        keys = self._conversation(cid)
        while True:
            fields = await self._redis.hkeys(keys.meta)
            named = [f.decode()[4:] for f in fields if f.startswith(b"key:")]
            if fields and not named:
                named = await self._scan_keys(keys)  # created before the meta named its keys
            answer = await self._answer(
                self._scripts.delete, [keys.events, keys.meta, keys.live, *named], [DELETED_NOTICE]
            )
            if answer[0] == "missing":
                return None
            if answer[0] == "deleted":
                unstarted = answer[2:]
                return Deleted(answer[1], list(zip(unstarted[::2], unstarted[1::2], strict=True)))

    async def _scan_keys(self, keys: ConversationKeys) -> list[str]:
        """The run and idempotency keys of a conversation, found by scanning the keyspace."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", keys.base) + ":*"
        fixed = {keys.events, keys.meta}
        found = [key.decode() async for key in self._redis.scan_iter(match=pattern, count=1000)]
        return [key for key in found if key not in fixed]

    # -- reads -------------------------------------------------------------------------------

    async def exists(self, cid: str) -> bool:
        keys = self._conversation(cid)
        return bool(await self._redis.exists(keys.events, keys.meta))

    async def active_run(self, cid: str) -> str | None:
        value = await self._redis.hget(self._conversation(cid).meta, "active_run")
        return value.decode() if value else None

    async def owner(self, cid: str) -> tuple[str | None, bool]:
        """Who owns the conversation (None: nobody) and whether it exists."""
        owner, first_id = await self._redis.hmget(
            self._conversation(cid).meta, ["owner", "first_id"]
        )
        return (owner.decode() if owner else None), first_id is not None

    def queue_owner(self, pipe: Any, cid: str) -> Callable[[Any], tuple[str | None, bool]]:
        """Add the read of ``owner`` to a pipeline; returns how to read its reply."""
        pipe.hmget(self._conversation(cid).meta, ["owner", "first_id"])

        def read(reply: Any) -> tuple[str | None, bool]:
            owner, first_id = reply
            return (owner.decode() if owner else None), first_id is not None

        return read

    async def run(self, cid: str, run_id: str) -> RunRecord | None:
        raw = await self._redis.hgetall(self._conversation(cid).run(run_id))
        if not raw:
            return None
        field = {k.decode(): v.decode() for k, v in raw.items()}.get
        return RunRecord(
            state=RunState(field("status", "missing")),
            model=field("model", ""),
            message_event_id=field("message_event_id", ""),
            assistant_message_id=field("assistant_message_id", ""),
            terminal_event_id=field("terminal_event_id", ""),
            worker=field("worker", ""),
            job_entry=field("job_entry", ""),
        )

    async def positions(self, cid: str, held: StreamPos | None) -> Positions | None:
        """Where a reader holding ``held`` stands; None when the conversation has no entry."""
        keys = self._conversation(cid)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.meta, "first_id")
            pipe.xrange(keys.events, count=1)
            pipe.xrevrange(keys.events, count=1)
            if held is not None:
                at = format_stream_id(held)
                pipe.xrange(keys.events, min=at, max=at, count=1)
            first_id, earliest, latest, *found = await pipe.execute()
        if not earliest:
            return None
        return Positions(
            parse_stream_id(first_id) if first_id else None,
            _position(earliest[0][0]),
            _position(latest[0][0]),
            bool(found and found[0]),
        )

    async def tail(self, cid: str) -> StreamPos | None:
        """The newest entry's position (``ORIGIN`` when every entry was trimmed away), or None
        when the conversation does not exist."""
        keys = self._conversation(cid)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.meta, "first_id")
            pipe.xrevrange(keys.events, "+", "-", count=1)
            first, newest = await pipe.execute()
        if first is None:
            return None
        return _position(newest[0][0]) if newest else ORIGIN

    async def is_stored(self, cid: str, position: StreamPos) -> bool:
        """Whether the entry at ``position`` is (still) in the stream."""
        at = format_stream_id(position)
        return bool(await self._redis.xrange(self._conversation(cid).events, min=at, max=at))

    async def earliest(self, cid: str) -> StreamPos | None:
        """The oldest retained entry's position, or None for an empty stream."""
        first = await self._redis.xrange(self._conversation(cid).events, count=1)
        return _position(first[0][0]) if first else None

    async def read_after(self, cid: str, after: StreamPos, count: int) -> list[Entry]:
        """Entries strictly after ``after``, oldest first, at most ``count``."""
        if after == LAST_POSITION:
            return []  # nothing can follow it, and Redis refuses an exclusive start there
        raw = await self._redis.xrange(
            self._conversation(cid).events,
            min="(" + format_stream_id(after),
            max="+",
            count=count,
        )
        return entries(raw)

    async def pages(self, cid: str, after: StreamPos = ORIGIN) -> AsyncIterator[list[Entry]]:
        """Every entry after ``after``, a page at a time."""
        while True:
            page = await self.read_after(cid, after, self._batch)
            if page:
                yield page
                after = page[-1].pos
            if len(page) < self._batch:
                return

    async def run_entries(self, cid: str, run_id: str, first: str, last: str) -> list[Entry]:
        """The entries of run ``run_id`` from entry ``first`` through ``last``."""
        key = self._conversation(cid).events
        run = run_id.encode()
        found: list[Entry] = []
        start = first
        while True:
            page = await self._redis.xrange(key, min=start, max=last, count=self._batch)
            found += entries([entry for entry in page if entry[1][RUN] == run])
            if len(page) < self._batch:
                return found
            start = "(" + page[-1][0].decode()

    async def snapshot(self, cid: str) -> Snapshot | None:
        """The merged conversation (``broker.core.snapshot``); None when it does not exist."""
        fold = SnapshotFold(cid, await self.active_run(cid))
        async for page in self.pages(cid):
            fold.add(page)
        return fold.result()

    async def summaries(self, cids: list[str]) -> list[Summary | None]:
        """What the list shows of each conversation, in one round trip; None for one that does
        not exist (any more)."""
        if not cids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid in cids:
                pipe.hmget(
                    self._conversation(cid).meta, ["first_id", "title", "active_run", "owner"]
                )
            metas = await pipe.execute()
        found: list[Summary | None] = []
        for first_id, title, active, owner in metas:
            first = parse_stream_id(first_id) if first_id else None
            found.append(
                None
                if first is None
                else Summary(
                    first,
                    (title or b"").decode(),
                    active.decode() if active else None,
                    (owner or b"").decode(),
                )
            )
        return found

    async def active_runs(self, cids: list[str]) -> list[str | None]:
        """The active run of each conversation, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid in cids:
                pipe.hget(self._conversation(cid).meta, "active_run")
            runs = await pipe.execute()
        return [run.decode() if run else None for run in runs]


def _position(entry_id: bytes) -> StreamPos:
    position = parse_stream_id(entry_id)
    assert position is not None  # written by Redis
    return position
