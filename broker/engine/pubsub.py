"""Pub/sub over one connection per shard, with every interruption made visible.

Pub/sub delivers at most once: whatever is published while a subscription connection is down,
or while a slot moves between shards, is lost. This subscriber hides none of that. It holds one
connection per shard (one on a single Redis), whatever the number of channels; channels are
added and removed in batches, one command per slot. After a channel is subscribed again (a
reconnect, a ``sunsubscribe`` pushed by a shard that gave its slot away, a failover) it calls
``on_resync(channel)`` once the server has confirmed the new subscription and before any
further message of it, so the owner re-checks what it may have missed from the source of truth.

redis-py's own ``PubSub`` resubscribes silently inside a reconnect, and its cluster variant
moves channels in background tasks; either would leave a lost message unnoticed, which is why
this module speaks the few pub/sub commands itself over plain redis-py connections.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import redis.exceptions
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from broker.core.backoff import Backoff
from broker.engine.connections import connect

log = logging.getLogger(__name__)

_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)
_MESSAGE = frozenset({b"message", b"smessage"})
_SUBSCRIBED = frozenset({b"subscribe", b"ssubscribe"})
_UNSUBSCRIBED = frozenset({b"unsubscribe", b"sunsubscribe"})


# A subscription connection blocks in reads (health comes from PINGs), never reconnects by
# itself (a reconnect must be seen), and speaks RESP2, whose pub/sub replies are plain
# arrays that `read_response` returns (RESP3 would route them to a push handler instead).
def _own_connection() -> dict[str, Any]:
    return {
        "socket_timeout": None,
        "retry": Retry(NoBackoff(), 0),
        "protocol": 2,
        "health_check_interval": 0,
    }


class _Shard:
    """The channels one connection carries, and what it still has to tell the server."""

    def __init__(
        self, name: str, connection_kwargs: dict[str, Any], connection_class: type
    ) -> None:
        self.name = name
        self.connection_kwargs = connection_kwargs
        self.connection_class = connection_class
        self.channels: set[bytes] = set()  # wanted on this shard
        self.confirmed: set[bytes] = set()  # subscribed on the current connection
        self.to_subscribe: set[bytes] = set()
        self.to_unsubscribe: set[bytes] = set()
        self.unsubscribing: Counter[bytes] = Counter()  # our UNSUBSCRIBEs not yet answered
        self.resync: set[bytes] = set()  # tell the owner once these are confirmed again
        self.moved: set[bytes] = set()  # the server dropped them: route them again
        self.heard = 0.0  # when the connection last said anything (time.monotonic)
        self.changed = anyio.Event()

    def wake(self) -> None:
        self.changed.set()


class Subscriber:
    """Channels subscribed on demand; messages and resyncs handed to two callbacks.

    ``client`` is the process's Redis client, used only to learn where to connect (and, on a
    cluster, which node owns a channel's slot). ``run`` must be running, in the owner's task
    group, for anything to be subscribed.
    """

    def __init__(
        self,
        client: Any,
        *,
        cluster: bool,
        on_message: Callable[[bytes, bytes], None],
        on_resync: Callable[[bytes], None],
        ping_seconds: float = 5.0,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        """``on_reconnect`` is told each time a lost connection is about to be opened again."""
        self._client = client
        self._on_reconnect = on_reconnect
        self._cluster = cluster
        self._on_message = on_message
        self._on_resync = on_resync
        self._ping_seconds = ping_seconds
        self._shards: dict[str, _Shard] = {}
        self._shard_of: dict[bytes, _Shard] = {}
        self._waiters: dict[bytes, anyio.Event] = {}
        self._tasks: anyio.abc.TaskGroup | None = None
        self._started = anyio.Event()

    async def run(self) -> None:
        """Serve every shard until cancelled."""
        await connect(self._client)  # on a cluster, the slot map: where each channel lives
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            self._started.set()
            await anyio.sleep_forever()

    async def subscribe(self, channel: bytes) -> None:
        """Returns once the server has confirmed the subscription (at once if it had)."""
        shard = self._shard_of.get(channel)
        if shard is None:
            await self._started.wait()
            shard = self._route(channel)
            shard.channels.add(channel)
            self._shard_of[channel] = shard
        shard.to_unsubscribe.discard(channel)
        if channel in shard.confirmed and not shard.unsubscribing[channel]:
            return
        waiter = self._waiters.get(channel)
        if waiter is None:
            waiter = self._waiters[channel] = anyio.Event()
            shard.to_subscribe.add(channel)
            shard.wake()
        await waiter.wait()

    def unsubscribe(self, channel: bytes) -> None:
        """Drop the channel; sent with the next batch, unless it is wanted again before then."""
        shard = self._shard_of.pop(channel, None)
        if shard is None:
            return
        shard.channels.discard(channel)
        shard.to_subscribe.discard(channel)
        shard.resync.discard(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None:
            waiter.set()  # nobody waits for a channel nobody wants; never leave one hanging
        if channel in shard.confirmed:
            shard.to_unsubscribe.add(channel)
            shard.wake()

    # -- routing -------------------------------------------------------------------------

    def _route(self, channel: bytes) -> _Shard:
        """The shard that carries ``channel`` now, started if it is new."""
        if self._cluster:
            node = self._client.get_node_from_key(channel)
            name, kwargs, cls = node.name, node.connection_kwargs, node.connection_class
        else:
            pool = self._client.connection_pool
            name, kwargs, cls = "redis", pool.connection_kwargs, pool.connection_class
        shard = self._shards.get(name)
        if shard is None:
            shard = self._shards[name] = _Shard(name, dict(kwargs), cls)
            assert self._tasks is not None
            self._tasks.start_soon(self._serve, shard, name=f"subscriber {name}")
        return shard

    async def _reroute(self, shard: _Shard, channels: set[bytes]) -> None:
        """Send ``channels`` wherever their slots now live; each is re-checked when confirmed."""
        if self._cluster:
            try:
                await self._client.nodes_manager.initialize()
            except _ERRORS:
                log.warning("could not refresh the cluster's slots; retrying shortly")
        for channel in channels:
            if self._shard_of.get(channel) is not shard:
                continue  # unsubscribed meanwhile
            target = self._route(channel) if self._cluster else shard
            if target is not shard:
                shard.channels.discard(channel)
                shard.confirmed.discard(channel)
                target.channels.add(channel)
                self._shard_of[channel] = target
            target.resync.add(channel)
            target.to_subscribe.add(channel)
            target.wake()

    # -- one shard -----------------------------------------------------------------------

    async def _serve(self, shard: _Shard) -> None:
        backoff = Backoff(0.05, 2.0)
        while shard.channels or shard.to_subscribe:
            connection = shard.connection_class(**{**shard.connection_kwargs, **_own_connection()})
            try:
                await connection.connect()
                backoff.reset()
                # A new connection carries nothing yet: subscribe everything wanted here.
                shard.confirmed.clear()
                shard.unsubscribing.clear()
                shard.to_unsubscribe.clear()
                shard.to_subscribe |= shard.channels
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._write, shard, connection)
                    await self._read(shard, connection)
            except* _ERRORS as lost:
                log.warning(
                    "subscription connection to %s lost (%s); reconnecting",
                    shard.name,
                    lost.exceptions[0],
                )
            finally:
                with anyio.CancelScope(shield=True):
                    await connection.disconnect(nowait=True)
            # Anything may have been published meanwhile: every channel re-checks its streams
            # once it is subscribed again, wherever its slot now lives.
            shard.confirmed.clear()
            if self._on_reconnect is not None and (shard.channels or shard.to_subscribe):
                self._on_reconnect()
            await backoff.wait()
            await self._reroute(shard, set(shard.channels))
        if self._shards.get(shard.name) is shard:
            del self._shards[shard.name]

    async def _read(self, shard: _Shard, connection: Connection) -> None:
        """Dispatch replies until the connection fails (the writer watches for silence)."""
        clock = time.monotonic
        while True:
            # No timeout here: a per-read timeout costs a timer per message, and silence is
            # what the writer's PINGs detect.
            reply = await connection.read_response(timeout=math.inf)
            shard.heard = clock()
            if not isinstance(reply, list) or len(reply) < 2:
                continue  # a PONG outside subscribed mode
            kind, channel = reply[0], reply[1]
            if kind in _MESSAGE:
                if channel in shard.confirmed:
                    self._on_message(channel, reply[2])
            elif kind in _SUBSCRIBED:
                self._confirmed(shard, channel)
            elif kind in _UNSUBSCRIBED:
                self._unsubscribed(shard, channel)

    def _confirmed(self, shard: _Shard, channel: bytes) -> None:
        if channel not in shard.channels:
            # Dropped while its SUBSCRIBE was on the way: drop it on the server too.
            shard.to_unsubscribe.add(channel)
            shard.wake()
            return
        shard.confirmed.add(channel)
        if channel in shard.resync:
            shard.resync.discard(channel)
            self._on_resync(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None:
            waiter.set()

    def _unsubscribed(self, shard: _Shard, channel: bytes) -> None:
        if shard.unsubscribing[channel]:
            shard.unsubscribing[channel] -= 1
            if not shard.unsubscribing[channel]:
                del shard.unsubscribing[channel]
            shard.confirmed.discard(channel)
            return
        # Not asked for: the shard no longer serves this slot (it moved, or failed over).
        shard.confirmed.discard(channel)
        if channel in shard.channels:
            shard.moved.add(channel)
            shard.wake()

    async def _write(self, shard: _Shard, connection: Connection) -> None:
        """Send the batched (un)subscriptions as they come, and a PING when nothing else goes."""
        subscribe, unsubscribe = (
            ("SSUBSCRIBE", "SUNSUBSCRIBE") if self._cluster else ("SUBSCRIBE", "UNSUBSCRIBE")
        )
        next_ping = anyio.current_time() + self._ping_seconds
        shard.heard = time.monotonic()
        while True:
            shard.changed = anyio.Event()
            if shard.moved:
                moved, shard.moved = shard.moved, set()
                await self._reroute(shard, moved)
            commands: list[tuple[Any, ...]] = []
            if shard.to_unsubscribe:
                leaving, shard.to_unsubscribe = shard.to_unsubscribe, set()
                shard.unsubscribing.update(leaving)
                commands += self._batches(unsubscribe, leaving)
            if shard.to_subscribe:
                joining, shard.to_subscribe = shard.to_subscribe, set()
                commands += self._batches(subscribe, joining)
            if anyio.current_time() >= next_ping:
                if time.monotonic() - shard.heard > 2 * self._ping_seconds:
                    raise redis.exceptions.ConnectionError("no reply to two PINGs")
                commands.append(("PING",))
                next_ping = anyio.current_time() + self._ping_seconds
            if commands:
                await connection.send_packed_command(connection.pack_commands(commands))
            with anyio.move_on_after(max(0.0, next_ping - anyio.current_time())):
                await shard.changed.wait()

    def _batches(self, command: str, channels: set[bytes]) -> list[tuple[Any, ...]]:
        """One command for all channels on a single Redis; one per slot on a cluster."""
        if not self._cluster:
            return [(command, *channels)]
        by_slot: dict[int, list[bytes]] = {}
        for channel in channels:
            by_slot.setdefault(key_slot(channel), []).append(channel)
        return [(command, *group) for group in by_slot.values()]


def never_resync(channel: bytes) -> None:
    """For owners that need no re-check: the stream or a mark in Redis covers a lost message."""
