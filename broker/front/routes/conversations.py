"""HTTP API version 1: request parsing, validation and the handlers.

Every check that can refuse a request runs before anything is written, so bad input changes
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.core.bodies import ModelList, ModelName, PostMessage
from broker.core.catalogue import DEFAULT_MODEL
from broker.core.events import StreamError
from broker.core.ids import ORIGIN, StreamPos, is_valid_path_id, parse_stream_id
from broker.core.snapshot import build_snapshot
from broker.engine.connections import UNAVAILABLE
from broker.front.actions import posting
from broker.front.actions.cancelling import cancel_run
from broker.front.actions.managing import (
    decode_cursor,
    delete_conversation,
    list_conversations,
    page_size,
)
from broker.front.actions.posting import idempotency_key_of
from broker.front.http.bodies import json_body
from broker.front.http.errors import ApiError
from broker.front.http.metrics import FrontMetrics, metrics_endpoint
from broker.front.http.observe import access_of
from broker.front.openapi import DOCUMENT
from broker.front.security.access import Access, GuardedRoute, authorize, conversation_not_found
from broker.front.security.browsers import NO_STORE
from broker.front.security.limits import Cost
from broker.front.security.principal import principal_of
from broker.front.security.session import session
from broker.front.services import Services
from broker.front.streaming.feed import Feed, resolve_start
from broker.front.streaming.opening import open_feed, open_run_feed
from broker.front.streaming.sse import EventStreamResponse, retry_frame, unstored_frame
from broker.front.streaming.waiting import Waiting

log = logging.getLogger("broker.front.routes.conversations")
_encoder = msgspec.json.Encoder()


def _json(
    body: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_encoder.encode(body), status, headers=headers, media_type="application/json")


def _path_id(request: Request, name: str) -> str:
    value = request.path_params[name]
    if not is_valid_path_id(value):
        raise ApiError(400, "invalid_id", f"{name} must match [A-Za-z0-9_-]{{1,128}}")
    return value


def _run_id_or_active(request: Request) -> str:
    """The run in the path; ``active`` (or none) means whichever run is active."""
    if request.path_params.get("run_id", "active") == "active":
        return "active"
    return _path_id(request, "run_id")


def _services(request: Request) -> Services:
    return request.state.services


def _last_event_id(request: Request) -> StreamPos | None:
    """The header wins over the query: a browser's reconnect sends the newer position there."""
    raw = request.headers.get("last-event-id")
    if raw is None:
        raw = request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return None
    position = parse_stream_id(raw.strip())
    if position is None:
        raise ApiError(
            400,
            "invalid_last_event_id",
            "Last-Event-ID must be an event id such as 1731000000000-0",
        )
    return position


async def post_message(request: Request) -> Response:
    services = _services(request)
    cid = _path_id(request, "cid")
    idempotency_key = idempotency_key_of(request)
    message = await json_body(request, PostMessage, services.settings.max_body_bytes)
    accepted = await posting.post_message(request, cid, message, idempotency_key)
    return _json(accepted, 202)


async def _sse_body(prefix: bytes, feed: Feed, metrics: FrontMetrics) -> AsyncIterator[bytes]:
    yield prefix
    try:
        async with aclosing(feed.frames()) as frames:
            async for chunk in frames:
                yield chunk
    except UNAVAILABLE:
        # End the stream cleanly: the client reconnects with its Last-Event-ID and loses nothing.
        log.warning("ending an SSE stream: Redis unreachable")
        feed.ended = "redis_unavailable"
        metrics.redis_errors.inc()


async def stream_conversation(request: Request) -> Response | EventStreamResponse:
    services = _services(request)
    cid = _path_id(request, "cid")
    last_event_id = _last_event_id(request)
    opened = services.openings.open()  # until its first read: later replays wait (Openings)
    try:
        async with services.first_reads:
            start = await resolve_start(services.store, cid, last_event_id)
        if start is None:
            opened()
            return _waiting_stream(request, cid, last_event_id)
        feed, released = open_feed(
            request, cid, start.position, exact=start.position != ORIGIN, opened=opened
        )
    except BaseException:
        opened()
        raise
    if start.reset:
        services.metrics.resets.inc()
    prefix = retry_frame(services.settings.retry_ms) + (start.reset or b"")

    def close() -> None:
        opened()  # in case the body never ran
        released()

    return EventStreamResponse(_sse_body(prefix, feed, services.metrics), close)


def _waiting_stream(
    request: Request, cid: str, last_event_id: StreamPos | None
) -> EventStreamResponse:
    """The stream of a conversation nobody has posted to yet (see ``waiting``): admitted like
    any stream, then keep-alives until the first message."""
    services = _services(request)
    release = services.admit_stream(cid)
    expires_at = principal_of(request).expires_at
    waiting = Waiting(services.store, services.hub, cid, expires_at)
    return EventStreamResponse(_waiting_body(request, cid, last_event_id, waiting), release)


async def _waiting_body(
    request: Request, cid: str, last_event_id: StreamPos | None, waiting: Waiting
) -> AsyncIterator[bytes]:
    services = _services(request)
    yield retry_frame(services.settings.retry_ms)
    try:
        async with aclosing(waiting.frames()) as frames:
            async for chunk in frames:
                yield chunk
        if not waiting.created:
            return
        try:
            # Whoever posted first owns it now: the caller may not be allowed to read it.
            await authorize(request, cid, Access.READ)
        except ApiError as refused:
            error = StreamError(refused.code, refused.message)
            yield unstored_frame("error", _encoder.encode(error))
            return
        start = await resolve_start(services.store, cid, last_event_id)
    except UNAVAILABLE:
        log.warning("ending an SSE stream: Redis unreachable")
        return
    if start is None:
        return  # deleted as soon as it was created
    feed = services.feed(
        cid,
        start.position,
        expires_at=principal_of(request).expires_at,
        exact=start.position != ORIGIN,
    )
    access = access_of(request.scope)
    if access is not None:
        access.feed = feed  # its access log line reports what the feed sent, and why it ended
    if start.reset:
        services.metrics.resets.inc()
    async with aclosing(_sse_body(start.reset or b"", feed, services.metrics)) as chunks:
        async for chunk in chunks:
            yield chunk


async def _known_conversation(services: Services, cid: str) -> None:
    if not await services.store.exists(cid):
        raise conversation_not_found(cid)


async def stream_run(request: Request) -> Response | EventStreamResponse:
    services = _services(request)
    cid = _path_id(request, "cid")
    run_id = _run_id_or_active(request)
    last_event_id = _last_event_id(request)
    if run_id == "active":
        active = await services.store.active_run(cid)
        if active is None:
            await _known_conversation(services, cid)
            return Response(status_code=204)
        run_id = active
    run = await open_run_feed(request, cid, run_id, last_event_id)
    prefix = retry_frame(services.settings.retry_ms) + run.reset
    return EventStreamResponse(_sse_body(prefix, run.feed, services.metrics), run.release)


def _wait_seconds(request: Request, limit: float) -> float | None:
    raw = request.query_params.get("wait")
    if raw is None or raw in ("false", "0"):
        return None
    if raw in ("true", "1"):
        return limit
    raise ApiError(400, "invalid_query", "wait must be true or false")


async def cancel(request: Request) -> Response:
    """Cancel the named run, or the active one (no run in the path, or ``active``)."""
    services = _services(request)
    cid = _path_id(request, "cid")
    run_id = _run_id_or_active(request)
    wait = _wait_seconds(request, services.settings.cancel_wait_seconds)
    if run_id == "active":
        active = await services.store.active_run(cid)
        if active is None:
            await _known_conversation(services, cid)
            raise ApiError(409, "no_active_run", "nothing is running in this conversation")
        run_id = active
    status, body = await cancel_run(services.store, cid, run_id, wait)
    return _json(body, status)


async def snapshot(request: Request) -> Response:
    services = _services(request)
    cid = _path_id(request, "cid")
    result = await build_snapshot(services.store, cid, services.settings.replay_batch)
    if result is None:
        raise conversation_not_found(cid)
    return _json(result, headers=NO_STORE)


async def conversations(request: Request) -> Response:
    """The caller's conversations, newest activity first (BROKER_AUTH=none: everyone's)."""
    services = _services(request)
    limit = page_size(request.query_params.get("limit"))
    raw_cursor = request.query_params.get("cursor")
    cursor = decode_cursor(raw_cursor) if raw_cursor else None
    subject = principal_of(request).subject if services.gate.enforced else ""
    page = await list_conversations(services.store, subject, limit, cursor)
    return _json(page, headers=NO_STORE)


async def delete(request: Request) -> Response:
    """Erase a conversation: its active run cancelled, every key deleted, its streams ended."""
    services = _services(request)
    cid = _path_id(request, "cid")
    if not await delete_conversation(services.store, cid, services.settings.cancel_wait_seconds):
        raise conversation_not_found(cid)
    return Response(status_code=204)


async def list_models(request: Request) -> Response:
    catalogue = _services(request).catalogue
    return _json(ModelList(DEFAULT_MODEL, [ModelName(name) for name in catalogue.models]))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    await _services(request).store.redis.ping()
    return JSONResponse({"status": "ready"})


async def openapi(request: Request) -> Response:
    return Response(DOCUMENT, media_type="application/json")


_CONVERSATION = "/v1/conversations/{cid}"

# Public routes are plain Routes on paths of the authentication allow-list; every other route
# is guarded and declares its access (tests/test_routes_guarded.py walks them all).
routes = [
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    GuardedRoute("/v1/session", session, methods=["POST", "DELETE"], access=Access.SUBJECT),
    GuardedRoute("/v1/models", list_models, methods=["GET"], access=Access.SUBJECT),
    GuardedRoute("/v1/conversations", conversations, methods=["GET"], access=Access.SUBJECT),
    GuardedRoute(_CONVERSATION, snapshot, methods=["GET"], access=Access.READ),
    GuardedRoute(_CONVERSATION, delete, methods=["DELETE"], access=Access.WRITE),
    GuardedRoute(
        _CONVERSATION + "/messages",
        post_message,
        methods=["POST"],
        access=Access.POST,
        cost=Cost.POST,
    ),
    GuardedRoute(
        _CONVERSATION + "/stream",
        stream_conversation,
        methods=["GET"],
        access=Access.FOLLOW,
        cost=Cost.STREAM,
    ),
    GuardedRoute(_CONVERSATION + "/cancel", cancel, methods=["POST"], access=Access.WRITE),
    GuardedRoute(
        _CONVERSATION + "/runs/{run_id}/stream",
        stream_run,
        methods=["GET"],
        access=Access.READ,
        cost=Cost.STREAM,
    ),
    GuardedRoute(
        _CONVERSATION + "/runs/{run_id}/cancel", cancel, methods=["POST"], access=Access.WRITE
    ),
]
