"""HTTP API version 1: conversations, their streams, cancel, the model names and the session.

Each route reads its request (path ids, positions, query), asks an action or opens a stream,
and writes the answer. Every check that can refuse a request runs before anything is written,
so bad input changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from broker.core.bodies import (
    CancelState,
    ConversationPage,
    MessageAccepted,
    ModelList,
    ModelName,
    PostMessage,
    Snapshot,
)
from broker.core.catalogue import DEFAULT_MODEL
from broker.core.errors import (
    CONVERSATION_NOT_FOUND,
    FORBIDDEN,
    FRONT_FULL,
    INVALID_CURSOR,
    INVALID_LAST_EVENT_ID,
    INVALID_QUERY,
    RUN_NOT_FOUND,
    TOO_MANY_STREAMS,
    ApiError,
)
from broker.core.events import StreamEnd
from broker.core.ids import ORIGIN, StreamPos, check_id, parse_stream_id
from broker.engine import UNAVAILABLE
from broker.front.actions import cancelling, posting
from broker.front.actions.managing import (
    decode_cursor,
    delete_conversation,
    list_conversations,
    page_size,
)
from broker.front.http.bodies import json_body
from broker.front.http.docs import Doc, Json, Param, Reply
from broker.front.http.observe import access_of
from broker.front.routes.declare import ApiRoute
from broker.front.security.access import Access, authorize, conversation_not_found
from broker.front.security.addresses import client_address
from broker.front.security.headers import NO_STORE
from broker.front.security.limits import Cost
from broker.front.security.principal import principal_of
from broker.front.security.session import end_session, start_session
from broker.front.services import Services
from broker.front.streaming.feed import frames_of, resolve_start
from broker.front.streaming.opening import open_feed, open_run_feed
from broker.front.streaming.sse import (
    CONVERSATION_EVENTS,
    RUN_EVENTS,
    EventStreamResponse,
    retry_frame,
    unstored_frame,
)
from broker.front.streaming.waiting import Waiting

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


def _json(
    body: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_encoder.encode(body), status, headers=headers, media_type="application/json")


def _services(request: Request) -> Services:
    return request.state.services


def _cid(request: Request) -> str:
    return check_id(request.path_params["cid"], "cid")


def _run_id_or_active(request: Request) -> str:
    """The run in the path; ``active`` (or none) means whichever run is active."""
    run_id = request.path_params.get("run_id", cancelling.ACTIVE)
    return run_id if run_id == cancelling.ACTIVE else check_id(run_id, "run_id")


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
            INVALID_LAST_EVENT_ID, "Last-Event-ID must be an event id such as 1731000000000-0"
        )
    return position


def wait_seconds(request: Request, limit: float) -> float | None:
    """``?wait=``: how long a cancel waits for the run's end (None: it does not)."""
    raw = request.query_params.get("wait")
    if raw is None or raw in ("false", "0"):
        return None
    if raw in ("true", "1"):
        return limit
    raise ApiError(INVALID_QUERY, "wait must be true or false")


# -- messages and cancel -----------------------------------------------------------------------


async def post_message(request: Request) -> Response:
    services = _services(request)
    cid = _cid(request)
    idempotency_key = posting.idempotency_key_of(request)
    message = await json_body(request, PostMessage, services.settings.max_body_bytes)
    accepted = await posting.post_message(request, cid, message, idempotency_key)
    return _json(accepted, 202)


async def cancel(request: Request) -> Response:
    """Cancel the named run, or the active one (no run in the path, or ``active``)."""
    services = _services(request)
    cid = _cid(request)
    run_id = _run_id_or_active(request)
    wait = wait_seconds(request, services.settings.cancel_wait_seconds)
    status, body = await cancelling.cancel(services.engine, cid, run_id, wait, services.draining)
    return _json(body, status)


# -- streams -----------------------------------------------------------------------------------


async def stream_conversation(request: Request) -> Response | EventStreamResponse:
    services = _services(request)
    cid = _cid(request)
    last_event_id = _last_event_id(request)
    opened = services.openings.open()  # until its first read: later replays wait (Openings)
    try:
        async with services.first_reads:
            start = await resolve_start(services.engine.conversations, cid, last_event_id)
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

    return EventStreamResponse(frames_of(feed, services.metrics, prefix=prefix), close)


def _waiting_stream(
    request: Request, cid: str, last_event_id: StreamPos | None
) -> EventStreamResponse:
    """The stream of a conversation nobody has posted to yet (see ``waiting``): admitted like
    any stream, then keep-alives until the first message."""
    services = _services(request)
    release = services.admit_stream(cid, client_address(request.scope))
    expires_at = principal_of(request).expires_at
    waiting = Waiting(services.engine.conversations, services.hub, cid, expires_at)
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
            error = StreamEnd(refused.code, refused.message)
            yield unstored_frame("error", _encoder.encode(error))
            return
        start = await resolve_start(services.engine.conversations, cid, last_event_id)
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
    async with aclosing(frames_of(feed, services.metrics, prefix=start.reset or b"")) as chunks:
        async for chunk in chunks:
            yield chunk


async def stream_run(request: Request) -> Response | EventStreamResponse:
    services = _services(request)
    cid = _cid(request)
    run_id = _run_id_or_active(request)
    last_event_id = _last_event_id(request)
    if run_id == cancelling.ACTIVE:
        active = await services.engine.conversations.active_run(cid)
        if active is None:
            if not await services.engine.conversations.exists(cid):
                raise conversation_not_found(cid)
            return Response(status_code=204)
        run_id = active
    run = await open_run_feed(request, cid, run_id, last_event_id)
    prefix = retry_frame(services.settings.retry_ms) + run.reset
    return EventStreamResponse(frames_of(run.feed, services.metrics, prefix=prefix), run.release)


# -- conversations -----------------------------------------------------------------------------


async def snapshot(request: Request) -> Response:
    services = _services(request)
    cid = _cid(request)
    result = await services.engine.conversations.snapshot(cid)
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
    page = await list_conversations(services.engine, subject, limit, cursor)
    return _json(page, headers=NO_STORE)


async def delete(request: Request) -> Response:
    """Erase a conversation: its active run cancelled, every key deleted, its streams ended."""
    services = _services(request)
    cid = _cid(request)
    wait = services.settings.cancel_wait_seconds
    if not await delete_conversation(services.engine, cid, wait, services.draining):
        raise conversation_not_found(cid)
    return Response(status_code=204)


async def list_models(request: Request) -> Response:
    catalogue = _services(request).catalogue
    return _json(ModelList(DEFAULT_MODEL, [ModelName(name) for name in catalogue.models]))


async def session(request: Request) -> Response:
    """``POST`` starts the session, ``DELETE`` ends it (one route, so 405s list both)."""
    if request.method == "POST":
        return await start_session(request)
    return await end_session(request)


# -- declarations ------------------------------------------------------------------------------

_STREAM_ID = {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"}
LAST_EVENT_ID = (
    Param(
        "Last-Event-ID",
        "header",
        _STREAM_ID,
        "resume after this event id (exclusive); wins over the query",
    ),
    Param(
        "last_event_id",
        "query",
        _STREAM_ID,
        "the same, for a fresh `EventSource`, which cannot set headers",
    ),
)
WAIT = Param(
    "wait",
    "query",
    {"enum": ["true", "false", "1", "0"]},
    "wait (bounded) for the run's terminal event and answer 200 with it",
)
CANCEL_REPLIES = (
    Reply(202, "the run was told to stop: `cancelling`", Json(CancelState)),
    Reply(200, "the run has ended (or was ended at once): its final status", Json(CancelState)),
)
_NO_STORE = ("Cache-Control: no-store",)
_CONVERSATION = "/v1/conversations/{cid}"

routes = [
    ApiRoute(
        "/v1/session",
        session,
        methods=["POST", "DELETE"],
        access=Access.SUBJECT,
        doc={
            "POST": Doc(
                "startSession",
                "Trade the Bearer token for the session cookie",
                "sessions",
                "Sets the HttpOnly cookie `broker_token` (path `/v1/`) to the token, so a browser "
                "page's `EventSource` and other GET requests are authenticated; posting and "
                "cancelling still need the header.",
                replies=(Reply(204, "the cookie is set", headers=_NO_STORE),),
            ),
            "DELETE": Doc(
                "endSession",
                "Clear the session cookie",
                "sessions",
                replies=(Reply(204, "the cookie is cleared", headers=_NO_STORE),),
            ),
        },
    ),
    ApiRoute(
        "/v1/models",
        list_models,
        methods=["GET"],
        access=Access.SUBJECT,
        doc=Doc(
            "listModels",
            "The model names clients may ask for",
            "conversations",
            "Names only: the catalogue's keys, URLs and headers stay on the server.",
            replies=(Reply(200, "the catalogue's names", Json(ModelList)),),
        ),
    ),
    ApiRoute(
        "/v1/conversations",
        conversations,
        methods=["GET"],
        access=Access.SUBJECT,
        doc=Doc(
            "listConversations",
            "The caller's conversations, newest activity first",
            "conversations",
            "Those the token's subject owns (an admin's too: only its own). With "
            "BROKER_AUTH=none, every conversation (they belong to nobody). Ordered by their "
            "latest message; pass `next_cursor` back as `cursor` for the next page.",
            params=(
                Param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    "conversations per page",
                ),
                Param(
                    "cursor", "query", {"type": "string"}, "the `next_cursor` of the previous page"
                ),
            ),
            replies=(Reply(200, "a page of conversations", Json(ConversationPage), _NO_STORE),),
            errors=(INVALID_QUERY, INVALID_CURSOR),
        ),
    ),
    ApiRoute(
        _CONVERSATION,
        snapshot,
        methods=["GET"],
        access=Access.READ,
        doc=Doc(
            "getConversation",
            "The merged conversation (snapshot)",
            "conversations",
            "Render it, then stream after its `last_event_id`: each event is seen once.",
            replies=(Reply(200, "the merged conversation", Json(Snapshot), _NO_STORE),),
            errors=(CONVERSATION_NOT_FOUND,),
        ),
    ),
    ApiRoute(
        _CONVERSATION,
        delete,
        methods=["DELETE"],
        access=Access.WRITE,
        doc=Doc(
            "deleteConversation",
            "Delete a conversation and everything stored of it",
            "conversations",
            "The owner or an admin. An active run is cancelled first; every key is deleted; "
            "open streams end with an `error` event `conversation_deleted`. The id is free "
            "again afterwards.",
            replies=(Reply(204, "deleted"),),
            errors=(FORBIDDEN, CONVERSATION_NOT_FOUND),
        ),
    ),
    ApiRoute(
        _CONVERSATION + "/messages",
        post_message,
        methods=["POST"],
        access=Access.POST,
        cost=Cost.POST,
        doc=Doc(
            "postMessage",
            "Send a message; starts a run",
            "conversations",
            "The answer is generated by a worker, not inside this request: follow it on a stream.",
            params=(posting.IDEMPOTENCY_KEY,),
            body=Json(PostMessage),
            replies=(
                Reply(202, "the message is stored and its run queued", Json(MessageAccepted)),
            ),
            errors=posting.ERRORS,
        ),
    ),
    ApiRoute(
        _CONVERSATION + "/stream",
        stream_conversation,
        methods=["GET"],
        access=Access.FOLLOW,
        cost=Cost.STREAM,
        streaming=True,
        doc=Doc(
            "streamConversation",
            "The conversation's events: replay, then live",
            "streams",
            "Never ends by itself. With no position it starts from the beginning. A "
            "conversation that does not exist yet (an id nobody owns) gets an open stream of "
            "keep-alives that delivers its events once its first message is posted; an id "
            "somebody else owns answers 404.",
            params=LAST_EVENT_ID,
            replies=(Reply(200, "An SSE stream of the whole conversation.", CONVERSATION_EVENTS),),
            errors=(INVALID_LAST_EVENT_ID, CONVERSATION_NOT_FOUND, TOO_MANY_STREAMS, FRONT_FULL),
        ),
    ),
    ApiRoute(
        _CONVERSATION + "/cancel",
        cancel,
        methods=["POST"],
        access=Access.WRITE,
        doc=Doc(
            "cancelActiveRun",
            "Stop the active run, from any device",
            "conversations",
            params=(WAIT,),
            replies=CANCEL_REPLIES,
            errors=cancelling.ERRORS,
        ),
    ),
    ApiRoute(
        _CONVERSATION + "/runs/{run_id}/stream",
        stream_run,
        methods=["GET"],
        access=Access.READ,
        cost=Cost.STREAM,
        streaming=True,
        doc=Doc(
            "streamRun",
            "One run's events, closed after its terminal event",
            "streams",
            params=LAST_EVENT_ID,
            replies=(
                Reply(200, "An SSE stream of one run, from its user message.", RUN_EVENTS),
                Reply(204, "`active` and nothing runs"),
            ),
            errors=(
                INVALID_LAST_EVENT_ID,
                CONVERSATION_NOT_FOUND,
                RUN_NOT_FOUND,
                TOO_MANY_STREAMS,
                FRONT_FULL,
            ),
        ),
    ),
    ApiRoute(
        _CONVERSATION + "/runs/{run_id}/cancel",
        cancel,
        methods=["POST"],
        access=Access.WRITE,
        doc=Doc(
            "cancelRun",
            "Stop a named run",
            "conversations",
            params=(WAIT,),
            replies=CANCEL_REPLIES,
            errors=cancelling.ERRORS,
        ),
    ),
]
