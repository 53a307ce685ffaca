"""The front tier's ASGI application: routes, error handlers, and a lifespan that owns Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette

from broker.core.connections import redis_client
from broker.core.models import Catalogue
from broker.core.settings import Settings
from broker.core.store import Store
from broker.front.api import routes
from broker.front.errors import HANDLERS
from broker.front.hub import Hub
from broker.front.services import Services

_TAIL_BLOCK_MS = 5000


def create_app(settings: Settings) -> Starlette:
    """Raises CatalogueError when the model catalogue cannot be read: refuse to start."""
    catalogue = Catalogue.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        pool = redis_client(settings, "front", max_connections=settings.redis_pool_size)
        # The shared tail's blocking read holds its connection; it gets one of its own.
        tail = redis_client(
            settings, "front", max_connections=1, socket_timeout=_TAIL_BLOCK_MS / 1000 + 10
        )
        store = Store(pool, settings)
        hub = Hub(
            tail,
            pool,
            store.keys,
            queue_frames=settings.client_queue_frames,
            block_ms=_TAIL_BLOCK_MS,
            batch_seconds=settings.tail_batch_ms / 1000,
        )
        loop = asyncio.get_running_loop()
        # Called from the server's signal handler, before it waits for open connections.
        app.state.drain = lambda: loop.call_soon_threadsafe(hub.close)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(hub.run)
                catch_up = anyio.CapacityLimiter(max(1, settings.redis_pool_size // 2))
                yield {"services": Services(settings, store, hub, catalogue, catch_up)}
                tasks.cancel_scope.cancel()
        finally:
            await tail.aclose()
            await pool.aclose()

    app = Starlette(routes=routes, exception_handlers=HANDLERS, lifespan=lifespan)
    app.state.drain = lambda: None
    return app
