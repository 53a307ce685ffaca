"""Redis clients with bounded pools, named so ``CLIENT LIST`` tells who holds each connection.

On a single Redis a client is ``redis.asyncio.Redis`` over a blocking pool; with
``BROKER_REDIS_CLUSTER`` it is redis-py's asyncio cluster client, which routes each command to
the node that owns its slot and follows the cluster through failovers.

Every pooled connection outlives Redis restarts and failovers: after one, each connection from
before is dead and fails on its next use. So a connection error is retried at once on a fresh
connection (a dead connection's command never reached the new server), and a connection idle
for a while is checked with a PING before it carries a command. Once Redis answers again, the
process does too, instead of failing once per stale connection for as long as they last.
Timeouts are not retried: a command that timed out may still run, and waiting again for a
stalled server would only hold the caller longer.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import anyio
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.core.settings import Settings, redacted_url

log = logging.getLogger(__name__)

# Redis, or the shard a command needs, cannot answer right now (down, failing over, slots
# moving): worth retrying later, never a reason to stop a process.
UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
)


# Redis is at its maxmemory and, with the noeviction policy the broker needs, refuses writes
# until retention frees room: the front answers 503, a worker's writes wait as for an outage.
FULL = redis.exceptions.OutOfMemoryError


def unavailable_errors(cluster: bool) -> tuple[type[Exception], ...]:
    """What a repeatable write rides out: ``UNAVAILABLE``, ``FULL`` and, on a cluster, the
    errors of a torn-down connection.

    During a failover redis-py's cluster client may hand a command a connection that a
    concurrent slot refresh is tearing down; it then raises AttributeError or RuntimeError
    before the command reaches Redis. Only for repeatable commands whose callers retry.
    """
    return UNAVAILABLE + (FULL,) + ((AttributeError, RuntimeError) if cluster else ())


# Either kind of client; both offer the same commands, scripts and pipelines.
Client = aioredis.Redis | RedisCluster

# Up to three more attempts, 10, 20 and 40 ms apart: a restarted Redis is reached at once, and
# an unreachable one is reported (503) within a few tens of milliseconds.
_RETRIES = 3
_BACKOFF = ExponentialBackoff(cap=0.25, base=0.005)
# A connection unused this long is PINGed before its next command.
_HEALTH_CHECK_SECONDS = 5


def _retry() -> Retry:
    return Retry(_BACKOFF, _RETRIES, supported_errors=(RedisConnectionError,))


def redis_client(
    settings: Settings, role: str, *, max_connections: int, socket_timeout: float | None = 10.0
) -> Any:
    """A client whose connections never grow past ``max_connections`` (per node on a cluster).

    A blocking pool is what keeps a front process's Redis connection count flat however many
    SSE clients it serves: callers wait for a free connection. The cluster client has no
    waiting pool; the front bounds its own concurrency instead (see ``Services``).
    """
    name = f"broker:{role}:{os.getpid()}"
    if settings.redis_cluster:
        return RedisCluster.from_url(
            settings.redis_url,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=5.0,
            client_name=name,
            # Through a failover: refresh the slots and try again, for a few seconds, about
            # what a replica takes to be promoted.
            retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), retries=10),
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        client_name=name,
        retry=_retry(),
        health_check_interval=_HEALTH_CHECK_SECONDS,
    )
    # With a pool given, the client takes its retry policy from the pool's connections.
    return aioredis.Redis(connection_pool=pool)


async def connect(client: Any) -> None:
    """Learn a cluster's slot map before anything runs concurrently on the client.

    The cluster client otherwise loads it lazily in whichever command comes first, and several
    first commands at once each reload it, closing connections the others are using. A single
    Redis needs nothing. Waits (with backoff) for a cluster that is not reachable yet.
    """
    if not isinstance(client, RedisCluster):
        return
    delay = 0.05
    while True:
        try:
            await client.initialize()
            return
        except UNAVAILABLE as exc:
            log.warning("cluster unreachable (%s); retrying in %.2fs", exc, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)


def wait_until_reachable(settings: Settings, process: str) -> None:
    """Exit, naming the address tried, when Redis does not answer a PING within
    ``BROKER_REDIS_WAIT_SECONDS`` (long enough for a Redis started alongside to come up).

    A process would otherwise start, accept work and fail every request, or hang, with nothing
    saying that the Redis it was pointed at (perhaps the default ``localhost:6379``) is not
    there. Outages after start are ridden out elsewhere; this is about a Redis that never was.
    """
    import redis
    import redis.cluster

    where = redacted_url(settings.redis_url)
    timeout = settings.redis_wait_seconds
    deadline = time.monotonic() + timeout
    while True:
        client: redis.Redis | redis.cluster.RedisCluster | None = None
        try:
            if settings.redis_cluster:
                client = redis.cluster.RedisCluster.from_url(
                    settings.redis_url, socket_connect_timeout=2
                )
            else:
                client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
            client.ping()
            return
        except redis.RedisError as exc:
            if time.monotonic() >= deadline:
                raise SystemExit(
                    f"{process}: cannot reach Redis at {where} (BROKER_REDIS_URL) "
                    f"after {timeout:g} s: {exc}"
                ) from None
            time.sleep(0.5)
        finally:
            if client is not None:
                client.close()
