"""The Durable Streams routes: ``/v1/stream/{name}`` and the read-only conversation view.

Every stream belongs to the subject that created it (with BROKER_AUTH=jwt): anyone else gets
the same 404 as for a stream that does not exist, as for conversations; an admin may do
everything. ``/v1/stream/conversations/{cid}`` reads a conversation with the conversation's own
access check and accepts no write.
"""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response

from broker.durable import offsets
from broker.durable.reading import (
    BASE64,
    SSE_HEADERS,
    Read,
    body_of,
    control_event,
    cursor,
    etag,
    is_text,
    long_poll,
    parse_offset,
    read_batch,
    read_headers,
    sse_events,
)
from broker.durable.requests import create_config, flag, media_type, messages, producer
from broker.durable.sources import ConversationSource, Source, StreamSource
from broker.durable.store import DurableStore
from broker.durable.wire import StreamMeta
from broker.front.access import Access, Endpoint, GuardedRoute, check_owner
from broker.front.errors import ApiError
from broker.front.principal import principal_of
from broker.front.request_body import read_body
from broker.front.services import Services
from broker.front.sse import KEEPALIVE, EventStreamResponse

PREFIX = "/v1/stream/"
CONVERSATIONS = "conversations/"
_NO_STORE = "no-store"
_WRITES = ("PUT", "POST", "DELETE")


def _services(request: Request) -> Services:
    return request.state.services


def _store(request: Request) -> DurableStore:
    return request.state.durable


def _not_found(name: str) -> ApiError:
    return ApiError(404, "stream_not_found", f"no stream {name}")


def _name(request: Request) -> str:
    name: str = request.path_params["name"]
    if not name or len(name) > 1024 or any(p in ("", ".", "..") for p in name.split("/")):
        raise ApiError(
            400, "invalid_stream_name", "a stream name is 1 to 1024 characters of path segments"
        )
    if name.startswith("__ds/") or name == "__ds":
        raise ApiError(404, "not_found", "the __ds prefix is reserved")
    return name


def _owner_of(request: Request) -> str:
    """The subject a new stream belongs to; none when access is not enforced."""
    return principal_of(request).subject if _services(request).gate.enforced else ""


def _check_owner(request: Request, name: str, owner: str) -> None:
    if _services(request).gate.enforced:
        check_owner(principal_of(request), owner or None, _not_found(name))


async def _meta(request: Request, name: str) -> StreamMeta:
    meta = await _store(request).meta(name)
    if meta is None:
        raise _not_found(name)
    _check_owner(request, name, meta.owner)
    return meta


def _cache_control(request: Request) -> str:
    scope = "private" if _services(request).gate.enforced else "public"
    return f"{scope}, max-age=60, stale-while-revalidate=300"


async def stream(request: Request) -> Response:
    name = _name(request)
    if name.startswith(CONVERSATIONS) or name == CONVERSATIONS.rstrip("/"):
        raise ApiError(404, "stream_not_found", f"no stream {name}")
    method = request.method
    if method == "PUT":
        return await _create(request, name)
    if method == "POST":
        return await _append(request, name)
    if method == "DELETE":
        meta = await _meta(request, name)
        del meta
        if not await _store(request).delete(name):
            raise _not_found(name)
        return Response(status_code=204)
    meta = await _meta(request, name)
    source = StreamSource(_store(request), name, meta)
    if method == "HEAD":
        return _head(meta)
    if source.ttl is not None:
        await _store(request).touch(name, source.ttl)
    return await _read(request, source)


async def conversation(request: Request) -> Response:
    """A conversation as a read-only JSON stream (the guard has checked read access)."""
    if request.method in _WRITES:
        raise ApiError(
            405,
            "method_not_allowed",
            "a conversation's stream is read-only",
            {"Allow": "GET, HEAD"},
        )
    cid = request.path_params["cid"]
    store = _store(request)
    source = ConversationSource(store, _services(request).store.keys, cid)
    state = await source.state()
    if state is None:
        raise ApiError(404, "conversation_not_found", f"no conversation {cid}")
    if request.method == "HEAD":
        return Response(
            headers={
                "Content-Type": source.content_type,
                "Stream-Next-Offset": offsets.encode(state.tail),
                "Cache-Control": _NO_STORE,
            }
        )
    return await _read(request, source)


def _head(meta: StreamMeta) -> Response:
    headers = {
        "Content-Type": meta.ct,
        "Stream-Next-Offset": offsets.encode(offsets.from_entry_id(meta.tail)),
        "Cache-Control": _NO_STORE,
    }
    if meta.ttl:
        headers["Stream-TTL"] = meta.ttl
    if meta.exp:
        headers["Stream-Expires-At"] = meta.exp
    if meta.is_closed:
        headers["Stream-Closed"] = "true"
    return Response(headers=headers)


async def _create(request: Request, name: str) -> Response:
    if "stream-forked-from" in request.headers:
        raise ApiError(501, "forks_unsupported", "this server does not fork streams")
    config = create_config(request)
    body = await read_body(request, _services(request).settings.max_body_bytes)
    initial = messages(body, config.media_type, append=False)
    owner = _owner_of(request)
    created = await _store(request).create(name, config, owner, initial)
    if not created.created:
        _check_owner(request, name, created.owner)
        if not created.same:
            raise ApiError(409, "stream_exists", "the stream exists with another configuration")
    headers = {
        "Content-Type": config.content_type,
        "Stream-Next-Offset": offsets.encode(created.tail),
    }
    if config.closed:
        headers["Stream-Closed"] = "true"
    if created.created:
        headers["Location"] = str(request.url)
        return Response(status_code=201, headers=headers)
    return Response(status_code=200, headers=headers)


async def _append(request: Request, name: str) -> Response:
    store = _store(request)
    meta = await _meta(request, name)
    close = flag(request, "stream-closed")
    writer = producer(request)
    body = await read_body(request, _services(request).settings.max_body_bytes)
    if not body and not close:
        raise ApiError(400, "empty_body", "an append needs a body (or Stream-Closed: true)")
    content_type = request.headers.get("content-type")
    kind = ""
    batch: list[bytes] = []
    if body:
        if content_type is None:
            raise ApiError(400, "missing_content_type", "an append with a body needs Content-Type")
        kind = media_type(content_type)
        # A body of another type is refused by the script, after the closed check it outranks.
        batch = messages(body, meta.ctn, append=True) if kind == meta.ctn else [body]
    seq = request.headers.get("stream-seq", "")
    result = await store.append(name, kind, batch, close=close, seq=seq, producer=writer)
    tail = {"Stream-Next-Offset": offsets.encode(result.tail)}
    closed = {**tail, "Stream-Closed": "true"}
    outcome = result.outcome
    if outcome == "missing":
        raise _not_found(name)
    if outcome == "closed":
        raise ApiError(409, "stream_closed", "the stream is closed", closed)
    if outcome == "content_type":
        raise ApiError(409, "content_type_mismatch", f"the stream's content type is {meta.ct}")
    if outcome == "seq":
        raise ApiError(409, "sequence_conflict", "Stream-Seq must increase")
    if outcome == "stale_epoch":
        raise ApiError(
            403,
            "stale_producer_epoch",
            "a newer producer epoch exists",
            {"Producer-Epoch": result.extra[0]},
        )
    if outcome == "epoch_seq":
        raise ApiError(400, "invalid_producer", "a new producer epoch starts at Producer-Seq 0")
    if outcome == "gap":
        raise ApiError(
            409,
            "producer_sequence_gap",
            "a Producer-Seq is missing",
            {
                "Producer-Expected-Seq": result.extra[0],
                "Producer-Received-Seq": result.extra[1],
            },
        )
    if outcome == "already_closed":
        return Response(status_code=204, headers=closed)
    headers = closed if close or outcome == "duplicate_closed" else tail
    if writer is not None:
        headers = {**headers, "Producer-Epoch": result.extra[0], "Producer-Seq": result.extra[1]}
        status = 200 if outcome == "ok" and batch else 204
        return Response(status_code=status, headers=headers)
    return Response(status_code=204, headers=headers)


async def _read(request: Request, source: Source) -> Response:
    services = _services(request)
    store = _store(request)
    settings = services.settings
    query = request.query_params
    live = query.get("live")
    if live not in (None, "long-poll", "sse"):
        raise ApiError(400, "invalid_live", "live must be long-poll or sse")
    if live is not None and "offset" not in query:
        raise ApiError(400, "missing_offset", "a live read needs an offset")
    state = await source.state()
    if state is None:
        raise _not_found(request.url.path)
    start, now, from_start = parse_offset(query.get("offset"), state.tail)
    read = Read(start, now=now, from_start=from_start, client_cursor=query.get("cursor"))
    if live == "sse":
        # Checked before the stream starts: a read from a trimmed offset is an error, not data.
        await read_batch(store, source, state, start, 1, from_start=from_start)
        headers = list(SSE_HEADERS)
        if not is_text(source.media_type):
            headers.append(BASE64)
        events = sse_events(
            store,
            services.hub,
            source,
            read,
            settings.replay_batch,
            settings.ds_sse_seconds,
            KEEPALIVE,
        )
        if now and state.closed:
            return EventStreamResponse(
                _single(control_event(start, up_to_date=True, closed=True, client_cursor=None)),
                headers=headers,
            )
        return EventStreamResponse(events, headers=headers)
    if now and live is None:
        headers = read_headers(
            source, state.tail, up_to_date=True, closed=state.closed, cursor_value=None
        )
        headers["Cache-Control"] = _NO_STORE
        return Response(body_of(source, []), headers=headers)
    batch = None
    if not now:
        batch = await read_batch(
            store, source, state, start, settings.replay_batch, from_start=from_start
        )
    if live == "long-poll" and (batch is None or not batch.messages):
        if state.closed and start >= state.tail:
            headers = read_headers(
                source, state.tail, up_to_date=True, closed=True, cursor_value=None
            )
            return Response(status_code=204, headers=headers)
        batch, state = await long_poll(
            store, services.hub, source, read, settings.replay_batch, settings.ds_long_poll_seconds
        )
        if batch is None:
            closed = state.closed and start >= state.tail
            headers = read_headers(
                source,
                start,
                up_to_date=True,
                closed=closed,
                cursor_value=cursor(read.client_cursor),
            )
            return Response(status_code=204, headers=headers)
    assert batch is not None
    up_to_date = batch.next_pos >= state.tail
    closed = state.closed and up_to_date
    headers = read_headers(
        source,
        batch.next_pos,
        up_to_date=up_to_date,
        closed=closed,
        cursor_value=cursor(read.client_cursor),
    )
    headers["ETag"] = etag(source, start, batch.next_pos, closed)
    headers["Cache-Control"] = _cache_control(request)
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers={"ETag": headers["ETag"]})
    return Response(body_of(source, batch.messages), headers=headers)


async def _single(event: bytes):  # type: ignore[no-untyped-def]
    yield event


def _cross_origin(endpoint: Endpoint) -> Endpoint:
    """Streams are read by pages on other origins (CORS decides which): say so to the browser."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        response = await endpoint(request)
        if isinstance(response, Response):
            response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        return response

    return answer


_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE"]

routes = [
    GuardedRoute(
        PREFIX + CONVERSATIONS + "{cid}",
        _cross_origin(conversation),
        methods=_METHODS,
        access=Access.READ,
    ),
    GuardedRoute(
        PREFIX + "{name:path}", _cross_origin(stream), methods=_METHODS, access=Access.SUBJECT
    ),
]
