"""The front tier's ASGI application: the routes, the layers in front of them, and a lifespan
that owns the engine, the live hub and the stream leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware

from broker.core.catalogue import Catalogue
from broker.core.settings import Settings
from broker.engine import Engine
from broker.front.http.errors import HANDLERS
from broker.front.http.metrics import FrontMetrics
from broker.front.http.observe import Observe
from broker.front.openapi import build as build_openapi
from broker.front.routes import ai_sdk, durable_streams, operations, subscriptions, v1
from broker.front.routes.declare import ApiRoute
from broker.front.routes.dispatch import StreamRoutes
from broker.front.routes.web import web_routes
from broker.front.security.access import Gate
from broker.front.security.authentication import Authentication
from broker.front.security.cors import Cors, cors_options
from broker.front.security.headers import SecurityHeaders
from broker.front.security.limits import Limits
from broker.front.security.lockout import Lockout
from broker.front.security.tokens import SecurityConfigError, TokenVerifier
from broker.front.services import Services
from broker.front.streaming.admission import OpenStreams
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


def all_routes() -> list[ApiRoute]:
    """Every route of a front, each declared once (``routes.declare``)."""
    return [
        *operations.routes,
        *v1.routes,
        *ai_sdk.routes,
        # Before the streams: the protocol reserves `__ds` for them.
        *subscriptions.routes,
        *durable_streams.routes,
        *web_routes(),
    ]


def create_app(settings: Settings) -> Starlette:
    """Raises CatalogueError when the model catalogue cannot be read, SecurityConfigError when
    authentication is not configured or cannot work: refuse to start."""
    catalogue = Catalogue.from_settings(settings)
    verifier = _verifier(settings)
    metrics = FrontMetrics()
    routes = all_routes()
    # Outermost first: every answer gets the headers, CORS answers preflights before anyone
    # asks for a token, and authentication runs before any route.
    middleware = [
        # Outside everything else: every answer (a 401 too) is counted, logged and gets its id.
        Middleware(Observe, metrics=metrics, routes=routes, access_log=settings.access_log),
        Middleware(SecurityHeaders),
        Middleware(Cors, **cors_options(settings)),
        Middleware(
            Authentication,
            verifier=verifier,
            cookie=settings.session_cookie,
            query_token=settings.jwt_query_token,
        ),
        # Innermost: the SSE routes skip the router and the exception middleware (StreamRoutes).
        Middleware(StreamRoutes, routes=[route for route in routes if route.streaming]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        engine = Engine(settings, "front")
        # The hub opens its own subscription connections: one per shard.
        hub = Hub(
            engine,
            queue_frames=settings.client_queue_frames,
            keepalive_seconds=settings.keepalive_seconds,
            ping_seconds=settings.live_ping_seconds,
            on_fell_behind=metrics.fell_behind.inc,
            on_reconnect=metrics.redis_reconnects.inc,
        )
        loop = asyncio.get_running_loop()
        draining = anyio.Event()

        def drain() -> None:
            """End every stream, and every wait a request is in (a cancel's ``?wait``, a
            long-poll), so the server's graceful shutdown finds nothing left to cut short."""
            hub.close()
            draining.set()

        # Called from the server's signal handler, before it waits for open connections.
        app.state.drain = lambda: loop.call_soon_threadsafe(drain)
        limits = Limits(engine, settings)
        gate = Gate(engine, limits, enforced=verifier is not None)
        try:
            await engine.connect()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(hub.run)
                tasks.start_soon(limits.leases.run)
                # A stream's opening reads share half the Redis pool, its later replay reads the
                # other half (see Feed._read).
                half = max(1, settings.redis_pool_size // 2)
                first_reads, catch_up = anyio.CapacityLimiter(half), anyio.CapacityLimiter(half)
                yield {
                    "services": Services(
                        settings,
                        engine,
                        hub,
                        catalogue,
                        first_reads,
                        catch_up,
                        gate,
                        metrics,
                        draining,
                        OpenStreams(settings, metrics.streams_open.inc),
                        Lockout(engine, settings.limit_failed_authentications_per_minute),
                        verifier,
                    )
                }
                tasks.cancel_scope.cancel()
        finally:
            await engine.aclose()

    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    # A trailing slash is answered where it was asked (404 not_found, or 400 invalid_id under
    # /v1/conversations/), never redirected to another URL.
    app.router.redirect_slashes = False
    app.state.drain = lambda: None
    app.state.metrics = metrics  # the server protocol counts its own refusals there too
    app.state.openapi = msgspec.json.encode(build_openapi(routes))
    return app
