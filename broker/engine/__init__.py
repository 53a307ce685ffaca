"""The engine: the only code that speaks Redis.

Everything the product keeps is behind the ``Engine`` and the parts it gathers, each named for
what the product does with it: ``conversations`` (accept, start, append, finish, cancel,
delete, and the reads), ``index`` (each subject's list of conversations), ``queue`` (jobs,
leases and the workers' control channels), ``limits`` (per-subject counters), ``outbox`` (the
notices of finished runs), ``streams`` (Durable Streams), ``subscriptions`` (their durable
cursors and wakes), ``sessions`` (logged-out session cookies) and ``subscriber`` (live notices
over pub/sub). The Lua scripts are files in ``lua/``; their answers reach the rest of the code as
the outcome types of each part, never as Redis's words. ``UNAVAILABLE`` is what a caller
catches when Redis cannot answer, ``FULL`` when it refuses writes at its ``maxmemory``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.core.settings import Settings
from broker.engine.connections import FULL, UNAVAILABLE, Client, connect, redis_client
from broker.engine.conversations import Conversations
from broker.engine.entries import as_sent
from broker.engine.index import ConversationIndex
from broker.engine.keys import Keys
from broker.engine.limits import Limits
from broker.engine.outbox import Outbox
from broker.engine.pubsub import Subscriber
from broker.engine.queue import JobQueue
from broker.engine.scripts import Scripts
from broker.engine.sessions import Sessions
from broker.engine.streams import StreamStore
from broker.engine.subscriptions import Subscriptions

__all__ = ["FULL", "UNAVAILABLE", "Engine"]


class Engine:
    """The product's state in one Redis (or Redis Cluster), over one client this owns.

    ``role`` names the process's connections (``CLIENT LIST`` shows ``broker:<role>:<pid>``);
    ``retry_seconds`` > 0 (the workers) rides out a Redis outage of up to that long in the
    run transitions, which are safe to repeat. ``client`` wraps a redis-py client the caller
    owns instead of opening one; either way the client hands stream reads (``XRANGE``,
    ``XREVRANGE``) over as Redis sent them, since the engine reads their entries by place
    (``entries.py``).
    """

    def __init__(
        self,
        settings: Settings,
        role: str,
        *,
        max_connections: int | None = None,
        socket_timeout: float | None = 10.0,
        retry_seconds: float = 0,
        client: Any = None,
    ) -> None:
        self.settings = settings
        self._owned = client is None
        self._client: Client = client or redis_client(
            settings,
            role,
            max_connections=max_connections or settings.redis_pool_size,
            socket_timeout=socket_timeout,
        )
        for command in ("XRANGE", "XREVRANGE"):
            self._client.set_response_callback(command, as_sent)
        self.keys = Keys(settings.key_prefix, settings.job_shard_count)
        scripts = Scripts(self._client, cluster=settings.redis_cluster)
        self.conversations = Conversations(
            self._client, self.keys, scripts, settings, retry_seconds=retry_seconds
        )
        self.index = ConversationIndex(self._client, self.keys, self.conversations, settings)
        self.queue = JobQueue(self._client, self.keys, scripts, settings)
        self.limits = Limits(self._client, self.keys, scripts, self.conversations, settings)
        self.outbox = Outbox(self._client, self.keys, scripts, self.conversations, settings)
        self.streams = StreamStore(self._client, self.keys, scripts, settings)
        self.sessions = Sessions(self._client, self.keys)
        self.subscriptions = Subscriptions(self._client, self.keys, scripts, settings)

    @property
    def client(self) -> Any:
        """The redis-py client, for the public forms that take one (``broker.client.tap``)."""
        return self._client

    async def connect(self) -> None:
        """Learn a cluster's slot map before anything runs concurrently (see ``connect``)."""
        await connect(self._client)

    async def ping(self) -> None:
        await self._client.ping()

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()

    def subscriber(
        self,
        *,
        on_message: Callable[[bytes, bytes], None],
        on_resync: Callable[[bytes], None],
        ping_seconds: float,
        on_reconnect: Callable[[], None] | None = None,
    ) -> Subscriber:
        """Live notices over pub/sub: one connection per shard, every interruption reported."""
        return Subscriber(
            self._client,
            cluster=self.settings.redis_cluster,
            on_message=on_message,
            on_resync=on_resync,
            ping_seconds=ping_seconds,
            on_reconnect=on_reconnect,
        )
