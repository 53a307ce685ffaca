"""The front tier's ASGI application: routes, error handlers, and a lifespan that owns Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware

from broker.core.catalogue import Catalogue
from broker.core.settings import Settings
from broker.engine.connections import connect, redis_client
from broker.engine.conversations import Store
from broker.engine.streams import DurableStore
from broker.front.http.errors import HANDLERS
from broker.front.http.metrics import FrontMetrics
from broker.front.http.observe import Observe
from broker.front.routes import ai_sdk as ai_sdk_routes
from broker.front.routes import durable_streams as durable_routes
from broker.front.routes.conversations import routes
from broker.front.routes.dispatch import StreamRoutes
from broker.front.routes.web import web_routes
from broker.front.security.access import Gate
from broker.front.security.authentication import Authentication
from broker.front.security.browsers import Cors, SecurityHeaders, cors_options
from broker.front.security.limits import Limits
from broker.front.security.tokens import SecurityConfigError, TokenVerifier
from broker.front.services import Services
from broker.front.streaming.hub import Hub


def _verifier(settings: Settings) -> TokenVerifier | None:
    if settings.auth == "jwt":
        return TokenVerifier.from_settings(settings)
    if settings.auth == "none":
        return None
    if not settings.auth:
        raise SecurityConfigError(
            "BROKER_AUTH is not set: set BROKER_AUTH=jwt (with BROKER_JWT_SECRET, "
            "BROKER_JWT_PUBLIC_KEY_FILE or BROKER_JWT_JWKS_URL), or BROKER_AUTH=none to let "
            "anyone who reaches this front read and write every conversation"
        )
    raise SecurityConfigError(f"BROKER_AUTH must be jwt or none, not {settings.auth!r}")


def create_app(settings: Settings) -> Starlette:
    """Raises CatalogueError when the model catalogue cannot be read, SecurityConfigError when
    authentication is not configured or cannot work: refuse to start."""
    catalogue = Catalogue.from_settings(settings)
    verifier = _verifier(settings)
    metrics = FrontMetrics()
    all_routes = [*routes, *ai_sdk_routes.routes, *durable_routes.routes, *web_routes()]
    # Outermost first: every answer gets the headers, CORS answers preflights before anyone
    # asks for a token, and authentication runs before any route.
    middleware = [
        # Outside everything else: every answer (a 401 too) is counted, logged and gets its id.
        Middleware(Observe, metrics=metrics, routes=all_routes, access_log=settings.access_log),
        Middleware(SecurityHeaders),
        Middleware(Cors, **cors_options(settings)),
        Middleware(
            Authentication,
            verifier=verifier,
            cookie=settings.session_cookie,
            query_token=settings.jwt_query_token,
        ),
        # Innermost: the SSE routes skip the router and the exception middleware (StreamRoutes).
        Middleware(StreamRoutes, routes=[r for r in routes if r.path.endswith("/stream")]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        pool = redis_client(settings, "front", max_connections=settings.redis_pool_size)
        store = Store(pool, settings)
        # The hub opens its own subscription connections: one per shard.
        hub = Hub(
            pool,
            store.keys,
            cluster=settings.redis_cluster,
            queue_frames=settings.client_queue_frames,
            keepalive_seconds=settings.keepalive_seconds,
            ping_seconds=settings.live_ping_seconds,
            on_fell_behind=metrics.fell_behind.inc,
            on_reconnect=metrics.redis_reconnects.inc,
        )
        loop = asyncio.get_running_loop()
        # Called from the server's signal handler, before it waits for open connections.
        app.state.drain = lambda: loop.call_soon_threadsafe(hub.close)
        limits = Limits(pool, store.keys, settings)
        gate = Gate(pool, store.keys, limits, enforced=verifier is not None)
        try:
            await connect(pool)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(hub.run)
                tasks.start_soon(limits.leases.run)
                half = max(1, settings.redis_pool_size // 2)
                first_reads, catch_up = anyio.CapacityLimiter(half), anyio.CapacityLimiter(half)
                yield {
                    "services": Services(
                        settings, store, hub, catalogue, first_reads, catch_up, gate, metrics
                    ),
                    "durable": DurableStore(pool, settings),
                }
                tasks.cancel_scope.cancel()
        finally:
            await pool.aclose()

    app = Starlette(
        routes=all_routes,
        middleware=middleware,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    # A trailing slash is answered where it was asked (404 not_found, or 400 invalid_id under
    # /v1/conversations/), never redirected to another URL.
    app.router.redirect_slashes = False
    app.state.drain = lambda: None
    return app
