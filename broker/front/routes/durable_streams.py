"""The Durable Streams routes: ``/v1/stream/{name}`` and the read-only conversation view.

Every stream belongs to the subject that created it (with BROKER_AUTH=jwt): anyone else gets
the same 404 as for a stream that does not exist, as for conversations; an admin may do
everything. ``/v1/stream/conversations/{cid}`` reads a conversation with the conversation's own
access check and accepts no write.
"""

from __future__ import annotations

import functools
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from broker.core.ids import StreamPos
from broker.engine.streams import Config, DurableStore
from broker.front.http.bodies import read_body
from broker.front.http.errors import ApiError
from broker.front.security.access import Access, Endpoint, GuardedRoute, check_owner
from broker.front.security.limits import Cost
from broker.front.security.principal import principal_of
from broker.front.services import Services
from broker.front.streaming.durable import (
    BASE64,
    SSE_HEADERS,
    Read,
    body_of,
    cursor,
    etag,
    is_text,
    long_poll,
    parse_offset,
    read_batch,
    read_headers,
    sse_events,
)
from broker.front.streaming.sources import JSON, ConversationSource, Source, StreamSource
from broker.front.streaming.sse import KEEPALIVE, EventStreamResponse
from broker.protocols.durable_streams import offsets
from broker.protocols.durable_streams.headers import (
    MAX_TOKEN_LENGTH,
    create_config,
    flag,
    media_type,
    messages,
    producer,
)
from broker.protocols.durable_streams.wire import StreamMeta

PREFIX = "/v1/stream/"
CONVERSATIONS = "conversations/"
_NO_STORE = "no-store"
_WRITES = ("PUT", "POST", "DELETE")
_MAX_BATCH = 10_000  # the most messages of one append a sub-offset looks through


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
    if meta.is_deleted:
        raise ApiError(410, "stream_gone", "the stream was deleted; forks of it still read")
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
        return await _delete(request, name)
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


async def _delete(request: Request, name: str) -> Response:
    """A stream with live forks is only marked deleted (410 from then on, its name taken);
    the last fork's deletion removes it, and so on up a chain of such sources."""
    store = _store(request)
    meta = await _meta(request, name)
    soft = await store.live_forks(name) > 0
    if not await store.delete(name, soft=soft):
        raise _not_found(name)
    source = meta.src
    while source:
        above = await store.meta(source)
        if above is None or not above.is_deleted or await store.live_forks(source):
            break
        await store.delete(source)
        source = above.src
    return Response(status_code=204)


async def _create(request: Request, name: str) -> Response:
    store = _store(request)
    config = create_config(request)
    inherited: list[tuple[bytes, bytes, bytes]] = []
    if config.source:
        config, inherited = await _fork(request, config)
    body = await read_body(request, _services(request).settings.max_body_bytes)
    initial = messages(body, config.media_type, append=False)
    owner = _owner_of(request)
    created = await store.create(name, config, owner, initial, inherited)
    if created.created and config.source:
        await store.add_fork(config.source, name)
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
        # Percent-encoded: a header is Latin-1, a stream name may be any Unicode.
        location = request.url.replace(path=quote(request.url.path, safe="/"), query="")
        headers["Location"] = str(location)
        return Response(status_code=201, headers=headers)
    return Response(status_code=200, headers=headers)


async def _fork(
    request: Request, config: Config
) -> tuple[Config, list[tuple[bytes, bytes, bytes]]]:
    """A fork copies what it inherits, entry ids included: its offsets are its source's up to
    the fork offset, and from then on it is a stream like any other."""
    store = _store(request)
    source = await store.meta(config.source)
    if source is None:
        raise _not_found(config.source)
    _check_owner(request, config.source, source.owner)
    if source.is_deleted:
        raise ApiError(409, "source_deleted", "the source stream was deleted")
    if "content-type" in request.headers and config.media_type != source.ctn:
        raise ApiError(409, "content_type_mismatch", f"the source's content type is {source.ct}")
    tail = offsets.from_entry_id(source.tail)
    raw = request.headers.get("stream-fork-offset")
    at = tail if raw is None else offsets.decode(raw.strip())
    if at is None:
        raise ApiError(400, "invalid_offset", "Stream-Fork-Offset is not an offset of this server")
    if at > tail:
        raise ApiError(400, "invalid_offset", "Stream-Fork-Offset is past the source's tail")
    data_key = store.keys(config.source).data
    inherited = await store.entries_through(data_key, at)
    sub = int(config.fork_sub_offset or 0)
    if sub:
        inherited += await _sub_offset(store, data_key, at, sub, json=source.ctn == JSON)
    expiry = {}
    if not config.ttl and not config.expires_at:
        expiry = {"ttl": source.ttl, "expires_at": source.exp, "expires_at_ms": source.expms}
    forked = config._replace(
        content_type=source.ct, media_type=source.ctn, fork_offset=offsets.entry_id(at), **expiry
    )
    return forked, inherited


async def _sub_offset(
    store: DurableStore, data_key: str, at: StreamPos, sub: int, *, json: bool
) -> list[tuple[bytes, bytes, bytes]]:
    """Past the fork offset, ``sub`` messages of the next JSON append, or ``sub`` bytes of the
    next append (kept as an entry of its own, under the id of the append it is cut from)."""
    following = await store.entries_after(data_key, at, _MAX_BATCH)
    if not following:
        raise ApiError(400, "invalid_sub_offset", "no data follows Stream-Fork-Offset")
    if not json:
        entry_id, _, data = following[0]
        if sub > len(data):
            raise ApiError(400, "invalid_sub_offset", "Stream-Fork-Sub-Offset is past that append")
        return [(entry_id, b"e", data[:sub])]
    batch = []
    for entry in following:
        batch.append(entry)
        if entry[1] == b"e":
            break
    if sub > len(batch):
        raise ApiError(400, "invalid_sub_offset", "Stream-Fork-Sub-Offset is past that append")
    kept = batch[:sub]
    entry_id, _, data = kept[-1]
    kept[-1] = (entry_id, b"e", data)
    return kept


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
    if len(seq) > MAX_TOKEN_LENGTH:
        raise ApiError(400, "invalid_seq", f"Stream-Seq is at most {MAX_TOKEN_LENGTH} characters")
    result = await store.append(name, kind, batch, close=close, seq=seq, producer=writer)
    tail = {"Stream-Next-Offset": offsets.encode(result.tail)}
    closed = {**tail, "Stream-Closed": "true"}
    outcome = result.outcome
    if outcome == "missing":
        raise _not_found(name)
    if outcome == "gone":
        raise ApiError(410, "stream_gone", "the stream was deleted; forks of it still read")
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
        # Counted like a conversation's SSE streams: the per-stream bound on this process
        # (BROKER_MAX_STREAMS_PER_CONVERSATION) and the open-streams gauge.
        release = services.admit_stream(source.stream_key)
        events = sse_events(
            store,
            services.hub,
            source,
            read,
            settings.replay_batch,
            settings.ds_sse_seconds,
            KEEPALIVE,
        )
        return EventStreamResponse(events, release, headers=headers)
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


def _cross_origin(endpoint: Endpoint) -> Endpoint:
    """Streams are read by pages on other origins (CORS decides which): say so to the browser."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        response = await endpoint(request)
        if isinstance(response, Response):
            response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        return response

    return answer


# A read holds one of its subject's open streams (BROKER_LIMIT_STREAMS_PER_SUBJECT) while it is
# served: a long-poll while it waits, an SSE read until it ends. Writes cost one request.
_READS = ["GET", "HEAD"]

routes = [
    GuardedRoute(
        PREFIX + CONVERSATIONS + "{cid}",
        _cross_origin(conversation),
        methods=_READS,
        access=Access.READ,
        cost=Cost.STREAM,
    ),
    GuardedRoute(
        PREFIX + CONVERSATIONS + "{cid}",
        _cross_origin(conversation),
        methods=list(_WRITES),
        access=Access.READ,
    ),
    GuardedRoute(
        PREFIX + "{name:path}",
        _cross_origin(stream),
        methods=_READS,
        access=Access.SUBJECT,
        cost=Cost.STREAM,
    ),
    GuardedRoute(
        PREFIX + "{name:path}", _cross_origin(stream), methods=list(_WRITES), access=Access.SUBJECT
    ),
]
