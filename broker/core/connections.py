"""Redis clients with bounded pools, named so ``CLIENT LIST`` tells who holds each connection.

Every pooled connection outlives Redis restarts and failovers: after one, each connection from
before is dead and fails on its next use. So a connection error is retried at once on a fresh
connection (a dead connection's command never reached the new server), and a connection idle
for a while is checked with a PING before it carries a command. Once Redis answers again, the
process does too, instead of failing once per stale connection for as long as they last.
Timeouts are not retried: a command that timed out may still run, and waiting again for a
stalled server would only hold the caller longer.
"""

from __future__ import annotations

import os

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.core.settings import Settings

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
) -> aioredis.Redis:
    """A client whose pool never grows past ``max_connections``: callers wait for a free one.

    A blocking pool is what keeps a front process's Redis connection count flat however many
    SSE clients it serves.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        client_name=f"broker:{role}:{os.getpid()}",
        retry=_retry(),
        health_check_interval=_HEALTH_CHECK_SECONDS,
    )
    # With a pool given, the client takes its retry policy from the pool's connections.
    return aioredis.Redis(connection_pool=pool)
