"""The job queue, the leases on what consumer groups hand out, and the workers' control channels.

Jobs are entries of the jobs streams (one per shard, see ``keys``), read by the consumer group
``workers``. A job's idle time in the group's pending list is its lease: the worker running a
job renews it every third of a lease; a job left idle for a whole lease is claimed by some
worker. Both renewing and releasing touch only entries this consumer still holds: a worker
paused past its lease (a GC pause, a frozen VM, SIGSTOP) may find its jobs claimed by another
worker when it wakes, and then must neither take them back nor acknowledge them for the new
holder. Renewing tells it which jobs it lost, so it can abandon their runs at once, even while
their model is silent. Webhook deliveries are leased the same way (the outbox's ``webhook``
group, see ``outbox``).

Every queued job is also indexed, in its shard's slot and in the same step (``enqueue.lua``):
its entry id by enqueue time, and the run it is for. The index entry outlives the job's entry
until the run has been started or ended, so a job that vanishes while its run waits (trimmed,
or lost with a failover) is found by ``lost_jobs``, and the workers end its run (``job_lost``)
or take it over.

Each worker hears cancels on a control channel of its own (sharded pub/sub on a cluster).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import redis.exceptions

from broker.core.jobs import ControlMessage, Job, job_encoder
from broker.core.settings import Settings
from broker.engine.connections import Client
from broker.engine.keys import Keys
from broker.engine.scripts import Scripts

GROUP = "workers"


class Handed(NamedTuple):
    """An entry a consumer group handed this consumer: its id and its one field's value (None
    when the entry is gone, deleted or trimmed, while it was pending)."""

    entry_id: bytes
    payload: bytes | None


class Leases:
    """The leases of one consumer (one process) of one stream's consumer group.

    ``field`` is the entry field that carries the payload; ``start`` is where a new group
    begins reading; ``delete`` says whether a released entry is also deleted (jobs are; outbox
    notices are read by other groups too, so they are not).
    """

    def __init__(
        self,
        client: Client,
        scripts: Scripts,
        key: str,
        consumer: str,
        *,
        field: bytes,
        group: str = GROUP,
        start: str = "0",
        delete: bool = True,
        index: tuple[str, str] | None = None,
    ) -> None:
        """``index``: the keys of the jobs index (``enqueue.lua``) a job's release may forget."""
        self._redis = client
        self.key = key
        self._release_keys = [key, *index] if index is not None else [key]
        self._consumer = consumer
        self._field = field
        self._group = group
        self._start = start
        self._delete = "1" if delete else "0"
        self._renew = scripts.renew
        self._release = scripts.release

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.key, self._group, id=self._start, mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _handed(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> list[Handed]:
        return [Handed(entry_id, (fields or {}).get(self._field)) for entry_id, fields in entries]

    async def read_new(self, count: int, block_ms: int | None) -> list[Handed]:
        """Up to ``count`` entries nobody has taken yet, leased to this consumer; waits up to
        ``block_ms`` for one. A group that vanished (Redis lost it) is created again."""
        return await self._read(">", count, block_ms)

    async def read_pending(self, after: bytes, count: int) -> list[Handed]:
        """Entries already handed to this consumer and not released, after ``after``."""
        return await self._read(after.decode(), count, None)

    async def _read(self, after: str, count: int, block_ms: int | None) -> list[Handed]:
        try:
            response = await self._redis.xreadgroup(
                self._group, self._consumer, {self.key: after}, count=count, block=block_ms
            )
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self.ensure_group()
                return []
            if "UNBLOCKED" in str(exc):
                return []  # the stream was deleted under a blocked read
            raise
        return self._handed([message for _, messages in response or () for message in messages])

    async def claim_lapsed(self, lease_ms: int, count: int) -> list[Handed]:
        """Entries whose lease lapsed (their consumer died or stalled), now this consumer's.

        The caller skips any of its own live entries among them: claiming one only renewed it.
        """
        try:
            _, claimed, *_ = await self._redis.xautoclaim(
                self.key, self._group, self._consumer, lease_ms, "0-0", count=count
            )
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        return self._handed(claimed)

    async def renew(self, entries: list[bytes]) -> set[bytes]:
        """Renew the leases of ``entries`` this consumer still holds; returns those it lost."""
        if not entries:
            return set()
        held = await self._renew(keys=[self.key], args=[self._group, self._consumer, *entries])
        return set(entries) - set(held)

    async def keep(self, entry_id: bytes) -> None:
        """Renew one lease unconditionally (a consumer that is plainly alive)."""
        await self._redis.xclaim(self.key, self._group, self._consumer, 0, [entry_id], justid=True)

    async def release(self, entry_id: bytes, *, handled: bool = True) -> None:
        """Done with an entry: acknowledge it, unless another consumer holds it now. A job
        dropped with its run not ``handled`` (never started nor ended here) stays in the jobs
        index, whose sweep deals with its run."""
        await self._release(
            keys=self._release_keys,
            args=[self._group, self._consumer, entry_id, self._delete, "1" if handled else "0"],
        )

    async def acknowledge(self, entry_id: bytes) -> None:
        """Done with an entry, whoever holds it."""
        await self._redis.xack(self.key, self._group, entry_id)


class LostJob(NamedTuple):
    """A job indexed long enough ago whose entry is gone, or whose consumer let its lease lapse
    without the group handing it on: its run needs ending."""

    stream: str
    entry_id: str
    cid: str
    run_id: str


class QueueDepth(NamedTuple):
    waiting: int  # jobs no worker has taken yet, over every shard
    oldest_age_seconds: float  # how long the oldest of them has waited (0: none waits)


class JobQueue:
    def __init__(self, client: Client, keys: Keys, scripts: Scripts, settings: Settings) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._cluster = settings.redis_cluster

    @property
    def streams(self) -> list[str]:
        return self._keys.job_streams

    def _shard_keys(self, stream: str) -> list[str]:
        return [stream, *self._keys.job_index(stream)]

    async def enqueue(self, job: Job) -> str:
        """Queue a run's job on its shard, indexed; returns its entry id."""
        stream = self._keys.job_stream(job.run_id)
        entry_id = await self._scripts.enqueue(
            keys=self._shard_keys(stream),
            args=[
                job_encoder.encode(job),
                int(time.time() * 1000),
                f"{job.conversation_id} {job.run_id}",
            ],
        )
        return entry_id.decode()

    async def withdraw(self, run_id: str, entry_id: str) -> None:
        """Take back the job of a run that will never start (refused, or deleted unstarted); a
        worker that already read it finds it gone and leaves the run alone."""
        stream = self._keys.job_stream(run_id)
        await self._scripts.withdraw(keys=self._shard_keys(stream), args=[entry_id])

    async def forget(self, stream: str, entry_ids: list[str]) -> None:
        """Stop watching jobs whose runs have been dealt with."""
        if entry_ids:
            await self._scripts.forget(keys=self._shard_keys(stream), args=entry_ids)

    async def lost_jobs(self, older_than_ms: int, lease_ms: int, count: int) -> list[LostJob]:
        """Indexed jobs queued more than ``older_than_ms`` ago whose entry is gone, or pending
        with a consumer that has not renewed it for a lease while the entry is gone (the group
        drops a vanished entry when it is claimed, so no worker would take it over): their runs
        are stuck unless someone ends them."""
        lost: list[LostJob] = []
        before = int(time.time() * 1000) - older_than_ms
        for stream in self.streams:
            queued, runs = self._keys.job_index(stream)
            entries = await self._redis.zrangebyscore(queued, "-inf", before, start=0, num=count)
            if not entries:
                continue
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.xrange(stream, entry, entry)
                    pipe.xpending_range(stream, GROUP, entry, entry, 1)
                found = await pipe.execute()
            gone = []
            for index, entry in enumerate(entries):
                stored, pending = found[2 * index], found[2 * index + 1]
                if stored:
                    continue  # still queued, or being run: the leases deal with it
                if pending and pending[0]["time_since_delivered"] < lease_ms:
                    continue  # a live worker still holds it
                gone.append(entry)
            if gone:
                for entry, run in zip(gone, await self._redis.hmget(runs, gone), strict=True):
                    cid, _, run_id = (run or b"").decode().partition(" ")
                    lost.append(LostJob(stream, entry.decode(), cid, run_id))
        return lost

    async def holds(self, stream: str, entry_id: bytes) -> bool:
        """Whether the job entry is still queued (not withdrawn)."""
        return bool(await self._redis.xrange(stream, entry_id, entry_id))

    def leases(self, consumer: str) -> dict[str, Leases]:
        """One consumer per shard of the jobs queue: a command names one stream (one slot)."""
        return {
            stream: Leases(
                self._redis,
                self._scripts,
                stream,
                consumer,
                field=b"j",
                index=self._keys.job_index(stream),
            )
            for stream in self.streams
        }

    def control_channel(self, worker: str) -> bytes:
        """The channel on which one worker hears cancels of the runs it owns."""
        return self._keys.control(worker).encode()

    async def tell_worker(self, worker: str, message: ControlMessage) -> None:
        """Publish on one worker's control channel (sharded pub/sub on a cluster)."""
        channel = self._keys.control(worker)
        data = job_encoder.encode(message)
        if self._cluster:
            await self._redis.spublish(channel, data)
        else:
            await self._redis.publish(channel, data)

    async def depth(self) -> QueueDepth:
        """The queue's depth and its oldest waiting job, read from every shard: they describe
        the queue every worker shares."""
        waiting = 0
        oldest_ms: int | None = None
        for stream in self.streams:
            length = await self._redis.xlen(stream)
            if not length:
                continue
            last_delivered = "0-0"
            pending = 0
            try:
                for info in await self._redis.xinfo_groups(stream):
                    if _text(info.get("name")) == GROUP:
                        last_delivered = _text(info.get("last-delivered-id")) or "0-0"
                        pending = int(info.get("pending") or 0)
            except redis.exceptions.ResponseError:
                pass  # the stream went away between the two reads: nothing of it waits
            waiting += max(0, length - pending)
            first = await self._redis.xrange(stream, "(" + last_delivered, "+", count=1)
            if first:
                ms = int(first[0][0].split(b"-")[0])
                if oldest_ms is None or ms < oldest_ms:
                    oldest_ms = ms
        if oldest_ms is None:
            return QueueDepth(waiting, 0.0)
        seconds, micros = await self._redis.time()
        return QueueDepth(waiting, max(0.0, seconds + micros / 1e6 - oldest_ms / 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
