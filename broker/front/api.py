"""HTTP API version 1: request parsing, validation and the handlers.

Every check that can refuse a request runs before anything is written, so bad input changes
nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import aclosing

import msgspec
import redis.exceptions
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.core.bodies import MessageAccepted, PostMessage
from broker.core.events import TERMINAL_STATUSES, UserMessage, encode
from broker.core.ids import StreamPos, is_valid_path_id, new_id, parse_stream_id, predecessor
from broker.core.jobs import Job, job_encoder
from broker.core.models import Catalogue, UnknownModel
from broker.core.snapshot import build_snapshot
from broker.core.store import NOBODY, Accepted, Owner
from broker.front.access import Access, GuardedRoute, admission_of, conversation_not_found
from broker.front.browser import NO_STORE
from broker.front.cancel import cancel_run
from broker.front.errors import ApiError
from broker.front.feed import Feed, resolve_start
from broker.front.limits import Cost
from broker.front.openapi import DOCUMENT
from broker.front.principal import principal_of
from broker.front.request_body import json_body
from broker.front.services import Services
from broker.front.session import session
from broker.front.sse import EventStreamResponse, retry_frame

log = logging.getLogger("broker.front.api")
_encoder = msgspec.json.Encoder()
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


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
            400, "invalid_last_event_id", "Last-Event-ID must be an event id such as 1731000000000-0"
        )
    return position


def _check_message(message: PostMessage, max_chars: int, catalogue: Catalogue) -> None:
    if not message.content.strip():
        raise ApiError(422, "invalid_field", "content must not be empty")
    if max_chars and len(message.content) > max_chars:
        raise ApiError(413, "content_too_large", f"content exceeds {max_chars} characters")
    try:
        catalogue.check_params(message.model, message.params)
    except UnknownModel:
        raise ApiError(422, "unknown_model", f"unknown model {message.model!r}") from None
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_field", f"params: {exc}") from None


async def post_message(request: Request) -> Response:
    services = _services(request)
    store = services.store
    cid = _path_id(request, "cid")
    principal = principal_of(request)
    owner = Owner(principal.subject, principal.admin) if services.gate.enforced else NOBODY
    limits = services.gate.limits
    # The guard read the conversation if its owner is checked or its creation counted.
    creating = admission_of(request).exists is False and limits.counts_creation(principal)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise ApiError(
            400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters"
        )
    message = await json_body(request, PostMessage, services.settings.max_body_bytes)
    _check_message(message, services.settings.max_content_chars, services.catalogue)

    run_id, message_id, answer_id = new_id("r"), new_id("m"), new_id("m")
    _, data = encode(UserMessage(message_id=message_id, content=message.content, run_id=run_id))
    fingerprint = hashlib.sha256(_encoder.encode(message)).hexdigest()
    # A new conversation is counted in the same round trip as the checks before queueing.
    refused, counted = await store.precheck(
        cid,
        idempotency_key,
        owner,
        also=(lambda pipe: limits.count_creation(pipe, principal)) if creating else None,
    )
    if refused is not None:
        return _refusal(cid, refused, fingerprint)
    if creating:
        limits.check_creation(counted)

    # The job goes first: once the run is accepted, its job already exists, so a front that
    # dies in between leaves at most a job for a run that never was, which a worker drops.
    job = Job(
        conversation_id=cid,
        run_id=run_id,
        message_id=message_id,
        assistant_message_id=answer_id,
        model=message.model,
        params=message.params,
        content=message.content,
    )
    job_id = await store.redis.xadd(store.keys.jobs, {b"j": job_encoder.encode(job)})
    accepted = await store.accept(
        cid,
        run_id=run_id,
        message_id=message_id,
        assistant_message_id=answer_id,
        model=message.model,
        data=data,
        idempotency_key=idempotency_key,
        idempotency_record=f"{fingerprint}\n{run_id}\n{message_id}",
        owner=owner,
    )
    if accepted.outcome != "ok":
        # A worker that already read the job finds it gone and leaves the run's keys untouched.
        await store.redis.xdel(store.keys.jobs, job_id)
        return _refusal(cid, accepted, fingerprint)
    return _json(MessageAccepted(cid, message_id, run_id, accepted.event_id), 202)


def _refusal(cid: str, refused: Accepted, fingerprint: str) -> Response:
    """The answer to a POST that starts nothing: the first answer to a retry, or an error."""
    if refused.outcome == "replay":
        first_fingerprint, first_run, first_message, first_event = (
            refused.idempotency_record.split("\n")
        )
        if first_fingerprint != fingerprint:
            raise ApiError(
                422, "idempotency_key_reused", "this Idempotency-Key was used with another body"
            )
        return _json(MessageAccepted(cid, first_message, first_run, first_event), 202)
    if refused.outcome == "not_owner":
        # Somebody else's: the same answer as everywhere a conversation may not be seen. (The
        # id is taken, so a POST cannot answer like a conversation that does not exist.)
        raise conversation_not_found(cid)
    if refused.outcome == "run_active":
        raise ApiError(
            409, "run_active", f"run {refused.active_run} of this conversation has not finished"
        )
    raise ApiError(503, "try_again", "the run could not be queued in time", {"Retry-After": "1"})


async def _sse_body(prefix: bytes, feed: Feed) -> AsyncIterator[bytes]:
    yield prefix
    try:
        async with aclosing(feed.frames()) as frames:
            async for chunk in frames:
                yield chunk
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        # End the stream cleanly: the client reconnects with its Last-Event-ID and loses nothing.
        log.warning("ending an SSE stream: Redis unreachable")


async def stream_conversation(request: Request) -> Response | EventStreamResponse:
    services = _services(request)
    cid = _path_id(request, "cid")
    last_event_id = _last_event_id(request)
    start = await resolve_start(services.store, cid, last_event_id)
    if start is None:
        raise conversation_not_found(cid)
    feed = services.feed(cid, start.position, expires_at=principal_of(request).expires_at)
    prefix = retry_frame(services.settings.retry_ms) + (start.reset or b"")
    return EventStreamResponse(_sse_body(prefix, feed), services.admit_stream(cid))


async def _known_conversation(services: Services, cid: str) -> None:
    if not await services.store.exists(cid):
        raise conversation_not_found(cid)


async def stream_run(request: Request) -> Response | EventStreamResponse:
    services = _services(request)
    store = services.store
    cid = _path_id(request, "cid")
    run_id = _run_id_or_active(request)
    last_event_id = _last_event_id(request)
    if run_id == "active":
        active = await store.active_run(cid)
        if active is None:
            await _known_conversation(services, cid)
            return Response(status_code=204)
        run_id = active
    info = await store.run_info(cid, run_id)
    if info is None:
        await _known_conversation(services, cid)
        raise ApiError(404, "run_not_found", f"no run {run_id} in conversation {cid}")
    message_pos = parse_stream_id(info["message_event_id"])
    assert message_pos is not None
    position = predecessor(message_pos)
    reset = b""
    if last_event_id is not None:
        # Checked exactly as on the conversation stream: a position that is not one of this
        # stream's (from the future, or another conversation) gets `reset` and the whole run.
        start = await resolve_start(store, cid, last_event_id)
        if start is None:
            raise ApiError(404, "conversation_not_found", f"no conversation {cid}")
        position = max(position, start.position)
        reset = start.reset or b""
    feed = services.feed(cid, position, run_id=run_id, expires_at=principal_of(request).expires_at)
    terminal = parse_stream_id(info.get("terminal_event_id", ""))
    if info["status"] in TERMINAL_STATUSES and terminal is not None and position >= terminal:
        feed.finished = True
    prefix = retry_frame(services.settings.retry_ms) + reset
    return EventStreamResponse(_sse_body(prefix, feed), services.admit_stream(cid))


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
    GuardedRoute("/v1/session", session, methods=["POST", "DELETE"], access=Access.SUBJECT),
    GuardedRoute(_CONVERSATION, snapshot, methods=["GET"], access=Access.READ),
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
        access=Access.READ,
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
