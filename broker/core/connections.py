"""Redis clients with bounded pools, named so ``CLIENT LIST`` tells who holds each connection."""

from __future__ import annotations

import os

import redis.asyncio as aioredis

from broker.core.settings import Settings


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
    )
    return aioredis.Redis(connection_pool=pool)
