"""The Durable Streams routes: ``/v1/stream/{name}`` and the read-only conversation view.

Every stream belongs to the subject that created it (with BROKER_AUTH=jwt): anyone else gets
the same 404 as for a stream that does not exist, as for conversations; an admin may do
everything. ``/v1/stream/conversations/{cid}`` reads a conversation with the conversation's own
access check and accepts no write.
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from broker.core.errors import (
    BODY_TOO_LARGE,
    CONTENT_TYPE_MISMATCH,
    CONVERSATION_NOT_FOUND,
    EMPTY_ARRAY,
    EMPTY_BODY,
    FORBIDDEN,
    FRONT_FULL,
    INVALID_EXPIRES_AT,
    INVALID_EXPIRY,
    INVALID_FORK,
    INVALID_LIVE,
    INVALID_OFFSET,
    INVALID_PRODUCER,
    INVALID_SEQ,
    INVALID_STREAM_NAME,
    INVALID_SUB_OFFSET,
    INVALID_TTL,
    MALFORMED_JSON,
    METHOD_NOT_ALLOWED,
    MISSING_CONTENT_TYPE,
    MISSING_OFFSET,
    NOT_FOUND,
    OFFSET_GONE,
    PRODUCER_SEQUENCE_GAP,
    RATE_LIMITED,
    SEQUENCE_CONFLICT,
    SOURCE_DELETED,
    STALE_PRODUCER_EPOCH,
    STORAGE_QUOTA_EXCEEDED,
    STREAM_CLOSED,
    STREAM_EXISTS,
    STREAM_GONE,
    STREAM_NOT_FOUND,
    STREAM_TOO_LARGE,
    TOKEN_EXPIRED,
    TOO_MANY_MESSAGES,
    TOO_MANY_STREAMS,
    TOO_MANY_STREAMS_CREATED,
    TRY_AGAIN,
    ApiError,
    ErrorCode,
)
from broker.core.ids import StreamPos, format_stream_id
from broker.core.streams import StreamConfig
from broker.engine import UNAVAILABLE, Engine
from broker.engine.limits import storage_field
from broker.engine.streams import (
    Appended,
    AppendOutcome,
    Created,
    Exists,
    Incarnation,
    Inherited,
    Staged,
    StageLost,
    StreamMeta,
    TooLarge,
    new_uid,
)
from broker.front.http.bodies import read_body
from broker.front.http.docs import Doc, Events, Frame, Param, Raw, Reply
from broker.front.routes.declare import ApiRoute
from broker.front.security.access import Access, Endpoint, check_owner
from broker.front.security.addresses import client_address
from broker.front.security.limits import Cost
from broker.front.security.principal import Principal, principal_of
from broker.front.services import Services
from broker.front.streaming.durable import (
    Read,
    Source,
    conversation_source,
    long_poll,
    read_batch,
    sse_events,
    stream_source,
)
from broker.front.streaming.sse import KEEPALIVE, EventStreamResponse
from broker.protocols.durable_streams import offsets
from broker.protocols.durable_streams.framing import (
    BASE64,
    JSON,
    SSE_HEADERS,
    ControlEvent,
    ReadEnd,
    body_of,
    cursor,
    etag,
    is_text,
    parse_offset,
    read_headers,
)
from broker.protocols.durable_streams.requests import (
    MAX_TOKEN_LENGTH,
    create_config,
    flag,
    media_type,
    messages,
    producer,
)

log = logging.getLogger(__name__)

PREFIX = "/v1/stream/"
CONVERSATIONS = "conversations/"
_NO_STORE = "no-store"
_WRITES = ("PUT", "POST", "DELETE")
_MAX_BATCH = 10_000  # the most messages of one append a sub-offset looks through


def _services(request: Request) -> Services:
    return request.state.services


def _engine(request: Request) -> Engine:
    return _services(request).engine


def _not_found(name: str) -> ApiError:
    return ApiError(STREAM_NOT_FOUND, f"no stream {name}")


def _name(request: Request) -> str:
    name: str = request.path_params["name"]
    if not name or len(name) > 1024 or any(p in ("", ".", "..") for p in name.split("/")):
        raise ApiError(
            INVALID_STREAM_NAME, "a stream name is 1 to 1024 characters of path segments"
        )
    if name.startswith("__ds/") or name == "__ds":
        raise ApiError(NOT_FOUND, "the __ds prefix is reserved")
    return name


def _owner_of(request: Request) -> str:
    """The subject a new stream belongs to; none when access is not enforced."""
    return principal_of(request).subject if _services(request).gate.enforced else ""


def _check_owner(request: Request, name: str, owner: str) -> None:
    if _services(request).gate.enforced:
        check_owner(principal_of(request), owner or None, _not_found(name))


async def _meta(request: Request, name: str) -> StreamMeta:
    meta = await _engine(request).streams.meta(name)
    if meta is None:
        raise _not_found(name)
    _check_owner(request, name, meta.owner)
    if meta.is_deleted:
        raise ApiError(STREAM_GONE, "the stream was deleted; forks of it still read")
    return meta


def _cache_control(request: Request) -> str:
    scope = "private" if _services(request).gate.enforced else "public"
    return f"{scope}, max-age=60, stale-while-revalidate=300"


async def stream(request: Request) -> Response:
    name = _name(request)
    if name.startswith(CONVERSATIONS) or name == CONVERSATIONS.rstrip("/"):
        raise ApiError(STREAM_NOT_FOUND, f"no stream {name}")
    method = request.method
    if method == "PUT":
        return await _create(request, name)
    if method == "POST":
        return await _append(request, name)
    if method == "DELETE":
        return await _delete(request, name)
    meta = await _meta(request, name)
    source = stream_source(_engine(request), name, meta)
    if method == "HEAD":
        return _head(meta)
    if source.ttl is not None:
        await _engine(request).streams.touch(name, source.ttl)
    return await _read(request, source)


async def conversation(request: Request) -> Response:
    """A conversation as a read-only JSON stream (the guard has checked read access)."""
    if request.method in _WRITES:
        raise ApiError(
            METHOD_NOT_ALLOWED, "a conversation's stream is read-only", {"Allow": "GET, HEAD"}
        )
    cid = request.path_params["cid"]
    source = conversation_source(_engine(request), cid)
    state = await source.view.state()
    if state is None:
        raise ApiError(CONVERSATION_NOT_FOUND, f"no conversation {cid}")
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
        "Stream-Next-Offset": offsets.encode(meta.tail_position),
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
    the last fork's deletion removes it, and so on up a chain of such sources. Its bytes are
    given back to the storage of the subject deleting it and of its owner (any other writer
    gets them back when its storage is next checked)."""
    streams = _engine(request).streams
    meta = await _meta(request, name)
    soft = await streams.live_forks(name) > 0
    if not await streams.delete(name, soft=soft):
        raise _not_found(name)
    limits = _services(request).gate.limits
    field = storage_field(meta.uid, name)
    principal = principal_of(request)
    await limits.refund_write(principal, field, None)
    try:
        await _engine(request).subscriptions.stream_deleted(name)
    except UNAVAILABLE:
        log.warning("could not drop a deleted stream from the listing: Redis unreachable")
    if meta.owner and meta.owner != principal.subject:
        await limits.refund_write(Principal(subject=meta.owner), field, None)
    source = meta.src
    while source:
        above = await streams.meta(source)
        if above is None or not above.is_deleted or await streams.live_forks(source):
            break
        await streams.delete(source)
        source = above.src
    return Response(status_code=204)


async def _subscriptions_see(
    request: Request,
    name: str,
    *,
    created_by: str | None = None,
    linked: list[bytes] | None = None,
) -> None:
    """Tell the subscriptions of a write: a new stream is listed and linked to the patterns
    that match it; the subscriptions linked to a written one are marked due. Written after the
    stream's own script (another slot); if this is lost, the workers' sweep repairs it."""
    subscriptions = _engine(request).subscriptions
    try:
        if created_by is not None:
            await subscriptions.stream_created(name, created_by)
        else:
            await subscriptions.changed(name, linked)
    except UNAVAILABLE:
        log.warning("could not mark subscriptions of %s due: Redis unreachable", name)


async def _create(request: Request, name: str) -> Response:
    """A new stream is one of its subject's creations of the day, and its first messages (and
    a fork's inherited ones) count in its messages and its storage; a PUT that finds the
    stream existing gives all of that back."""
    streams = _engine(request).streams
    config = create_config(request.headers)
    fork: Fork | None = None
    if config.source:
        config, fork = await _fork(request, config)
    body = await read_body(request, _services(request).settings.max_body_bytes)
    initial = messages(
        body,
        config.media_type,
        append=False,
        max_messages=_services(request).settings.ds_max_messages_per_write,
    )
    owner = _owner_of(request)
    uid = new_uid()
    field = storage_field(uid, name)
    own = sum(map(len, initial))
    # A fork is admitted for all its source was ever given (what it inherits is known once
    # copied), and gets back what it did not inherit.
    size = own + (fork.estimate if fork else 0)
    principal = principal_of(request)
    limits = _services(request).gate.limits
    counted = await limits.admit_write(
        principal, messages=len(initial), size=size, field=field, creating=True
    )
    created: Created | Exists | TooLarge | StageLost | None = None
    staged: Staged | None = None
    try:
        if fork is not None:
            staged = await streams.stage_fork(name, uid, config.source, fork.through, fork.extra)
        created = await streams.create(name, config, owner, initial, staged, uid=uid)
    finally:
        if counted and not isinstance(created, Created):
            await limits.refund_write(principal, field, size, creation=True)
        elif counted and staged is not None and own + staged.size < size:
            await limits.refund_write(principal, field, size - own - staged.size)
    if isinstance(created, TooLarge):
        raise ApiError(STREAM_TOO_LARGE, "the stream would hold more bytes than a stream may")
    if isinstance(created, StageLost):
        raise ApiError(TRY_AGAIN, "the fork's copy took too long; try again", {"Retry-After": "1"})
    if isinstance(created, Created):
        if config.source:
            await streams.add_fork(config.source, name)
        await _subscriptions_see(request, name, created_by=owner)
    else:
        _check_owner(request, name, created.owner)
        if not created.same:
            raise ApiError(STREAM_EXISTS, "the stream exists with another configuration")
    headers = {
        "Content-Type": config.content_type,
        "Stream-Next-Offset": offsets.encode(created.tail),
    }
    if config.closed:
        headers["Stream-Closed"] = "true"
    if isinstance(created, Created):
        # Percent-encoded: a header is Latin-1, a stream name may be any Unicode.
        location = request.url.replace(path=quote(request.url.path, safe="/"), query="")
        headers["Location"] = str(location)
        return Response(status_code=201, headers=headers)
    return Response(status_code=200, headers=headers)


class Fork(NamedTuple):
    """What a fork inherits: its source's entries through ``through``, then ``extra`` (a
    sub-offset's cut of the next append); ``estimate`` bounds their bytes from above."""

    through: StreamPos
    extra: Inherited
    estimate: int


async def _fork(request: Request, config: StreamConfig) -> tuple[StreamConfig, Fork]:
    """A fork copies what it inherits, entry ids included (``StreamStore.stage_fork``, page by
    page): its offsets are its source's up to the fork offset, and from then on it is a stream
    like any other."""
    streams = _engine(request).streams
    source = await streams.meta(config.source)
    if source is None:
        raise _not_found(config.source)
    _check_owner(request, config.source, source.owner)
    if source.is_deleted:
        raise ApiError(SOURCE_DELETED, "the source stream was deleted")
    if "content-type" in request.headers and config.media_type != source.ctn:
        raise ApiError(CONTENT_TYPE_MISMATCH, f"the source's content type is {source.ct}")
    tail = source.tail_position
    raw = request.headers.get("stream-fork-offset")
    at = tail if raw is None else offsets.decode(raw.strip())
    if at is None:
        raise ApiError(INVALID_OFFSET, "Stream-Fork-Offset is not an offset of this server")
    if at > tail:
        raise ApiError(INVALID_OFFSET, "Stream-Fork-Offset is past the source's tail")
    extra: Inherited = []
    sub = int(config.fork_sub_offset or 0)
    if sub:
        following = await streams.entries_after(config.source, at, _MAX_BATCH)
        extra = _sub_offset(following, sub, json=source.ctn == JSON)
    expiry = {}
    if not config.ttl and not config.expires_at:
        expiry = {"ttl": source.ttl, "expires_at": source.exp, "expires_at_ms": source.expms}
    forked = config._replace(
        content_type=source.ct,
        media_type=source.ctn,
        fork_offset=format_stream_id(at),
        **expiry,
    )
    estimate = int(source.bytes or 0) + sum(len(data) for _, _, data in extra)
    return forked, Fork(at, extra, estimate)


def _sub_offset(following: Inherited, sub: int, *, json: bool) -> Inherited:
    """Past the fork offset, ``sub`` messages of the next JSON append, or ``sub`` bytes of the
    next append (kept as an entry of its own, under the id of the append it is cut from)."""
    if not following:
        raise ApiError(INVALID_SUB_OFFSET, "no data follows Stream-Fork-Offset")
    if not json:
        entry_id, _, data = following[0]
        if sub > len(data):
            raise ApiError(INVALID_SUB_OFFSET, "Stream-Fork-Sub-Offset is past that append")
        return [(entry_id, b"e", data[:sub])]
    batch = []
    for entry in following:
        batch.append(entry)
        if entry[1] == b"e":
            break
    if sub > len(batch):
        raise ApiError(INVALID_SUB_OFFSET, "Stream-Fork-Sub-Offset is past that append")
    kept = batch[:sub]
    entry_id, _, data = kept[-1]
    kept[-1] = (entry_id, b"e", data)
    return kept


class _Written(Response):
    """The answer to a write: no body, its headers given as raw pairs. Starlette's own
    ``Response`` builds them from a mapping (each name lower-cased and encoded), a fair part
    of what a small append costs the front."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.background = None
        self.body = b""
        self.raw_headers = headers


_CROSS_ORIGIN = (b"cross-origin-resource-policy", b"cross-origin")
_STREAM_CLOSED = (b"stream-closed", b"true")


def _header_map(request: Request) -> dict[str, str]:
    """The request's headers by (lower-case) name, the first of each: one pass, where each
    lookup in Starlette's ``Headers`` is a pass of its own."""
    found: dict[str, str] = {}
    for name, value in request.scope["headers"]:
        key = name.decode("latin-1")
        if key not in found:
            found[key] = value.decode("latin-1")
    return found


async def _read_body(request: Request, declared: str | None, limit: int) -> bytes:
    """``read_body``'s bounds (413 as soon as the body is known to exceed ``limit``), read
    from the request's ``receive`` itself: an append's body is nearly always one message."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(BODY_TOO_LARGE, f"the body exceeds {limit} bytes")
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise ApiError(BODY_TOO_LARGE, f"the body exceeds {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Write(NamedTuple):
    kind: str  # the body's media type ("" without a body)
    batch: list[bytes]  # its messages
    seq: str  # Stream-Seq


def _write_of(
    headers: dict[str, str], body: bytes, close: bool, stream_type: str, max_messages: int
) -> _Write:
    """What an append's body holds for a stream of media type ``stream_type``: each element of
    a JSON array in a JSON stream, the body as one message otherwise (a body of another type is
    refused by the script, after the closed check that outranks it)."""
    if not body and not close:
        raise ApiError(EMPTY_BODY, "an append needs a body (or Stream-Closed: true)")
    kind = ""
    batch: list[bytes] = []
    if body:
        content_type = headers.get("content-type")
        if content_type is None:
            raise ApiError(MISSING_CONTENT_TYPE, "an append with a body needs Content-Type")
        kind = media_type(content_type)
        if kind == stream_type:
            batch = messages(body, stream_type, append=True, max_messages=max_messages)
        else:
            batch = [body]
    seq = headers.get("stream-seq", "")
    if len(seq) > MAX_TOKEN_LENGTH:
        raise ApiError(INVALID_SEQ, f"Stream-Seq is at most {MAX_TOKEN_LENGTH} characters")
    return _Write(kind, batch, seq)


async def _append(request: Request, name: str) -> Response:
    """One round trip to Redis when the write is not counted (an admin, or no per-subject
    stream limits): the append script checks what the metadata read before it used to (the
    stream exists, is not deleted, is the caller's) and the body is split by its own content
    type, which must be the stream's anyway. The metadata is read only on an error path, so
    that a missing or deleted stream outranks what is wrong with the request, as when it was
    read first. A counted write needs the stream's incarnation (its storage is counted per
    incarnation) before the append: the one remembered from an earlier write, which the script
    checks (``MOVED``: given back, and tried again with the metadata read afresh), else read."""
    services = _services(request)
    settings = services.settings
    streams = services.engine.streams
    limits = services.gate.limits
    principal = principal_of(request)
    owner = principal.subject if services.gate.enforced and not principal.admin else ""
    headers = _header_map(request)
    try:
        close = flag(headers, "stream-closed")
        writer = producer(headers)
        body = await _read_body(request, headers.get("content-length"), settings.max_body_bytes)
    except ApiError:
        await _meta(request, name)  # the stream's own 404 or 410 comes first
        raise
    most = settings.ds_max_messages_per_write
    counts = limits.counts_write(principal)
    for attempt in range(2):
        known = streams.known(name) if counts and not attempt else None
        if known is not None and owner and known.owner != owner:
            known = None  # remembered from before a deletion, maybe: read it again
        # Without the stream's type at hand, the body is read as of its own type.
        assumed = (
            known.media_type if known is not None else media_type(headers.get("content-type") or "")
        )
        try:
            write = _write_of(headers, body, close, assumed, most)
        except ApiError:
            meta = await _meta(request, name)
            known = _incarnation(meta) if counts else None
            write = _write_of(headers, body, close, meta.ctn, most)
        if counts and known is None and write.batch:
            meta = await _meta(request, name)
            known = _incarnation(meta)
            if meta.ctn != assumed:
                write = _write_of(headers, body, close, meta.ctn, most)
        result = await _admitted_append(
            request, name, write, close, writer, owner, known if write.batch else None
        )
        if result.outcome is not AppendOutcome.MOVED:
            return await _answer_append(request, name, result, close, writer, bool(write.batch))
        streams.forget(name)
    raise ApiError(TRY_AGAIN, "the stream was replaced while written; try again", _RETRY_SOON)


_RETRY_SOON = {"Retry-After": "1"}


def _incarnation(meta: StreamMeta) -> Incarnation:
    return Incarnation(meta.uid, meta.owner, meta.ctn)


async def _admitted_append(
    request: Request,
    name: str,
    write: _Write,
    close: bool,
    writer: tuple[str, str, str] | None,
    owner: str,
    known: Incarnation | None,
) -> Appended:
    """The append, counted first in its subject's limits when ``known`` says which stream
    incarnation it stores in; what it does not store is given back."""
    services = _services(request)
    limits = services.gate.limits
    principal = principal_of(request)
    counted = False
    field = ""
    size = 0
    if known is not None:
        field = storage_field(known.uid, name)
        size = sum(map(len, write.batch))
        try:
            counted = await limits.admit_write(
                principal, messages=len(write.batch), size=size, field=field, creating=False
            )
        except ApiError:
            await _meta(request, name)  # a stream gone since it was remembered: its 404 first
            raise
    stored = False
    try:
        result = await services.engine.streams.append(
            name,
            write.kind,
            write.batch,
            close=close,
            seq=write.seq,
            producer=writer,
            owner=owner,
            uid=known.uid if counted and known is not None else "",
        )
        stored = result.outcome is AppendOutcome.OK
    finally:
        if counted and not stored:
            await limits.refund_write(principal, field, size)
    return result


async def _answer_append(
    request: Request,
    name: str,
    result: Appended,
    close: bool,
    writer: tuple[str, str, str] | None,
    has_messages: bool,
) -> Response:
    """The answer to an append: its refusal raised, or its headers (an idempotent producer's
    append that wrote messages is a 200, every other success a 204)."""
    tail = offsets.encode(result.tail)
    match result.outcome:
        case AppendOutcome.MISSING:
            raise _not_found(name)
        case AppendOutcome.GONE:
            raise ApiError(STREAM_GONE, "the stream was deleted; forks of it still read")
        case AppendOutcome.TOO_LARGE:
            raise ApiError(STREAM_TOO_LARGE, "the stream would hold more bytes than a stream may")
        case AppendOutcome.CLOSED:
            raise ApiError(
                STREAM_CLOSED,
                "the stream is closed",
                {"Stream-Next-Offset": tail, "Stream-Closed": "true"},
            )
        case AppendOutcome.CONTENT_TYPE:
            raise ApiError(
                CONTENT_TYPE_MISMATCH, f"the stream's content type is {result.content_type}"
            )
        case AppendOutcome.SEQ:
            raise ApiError(SEQUENCE_CONFLICT, "Stream-Seq must increase")
        case AppendOutcome.STALE_EPOCH:
            raise ApiError(
                STALE_PRODUCER_EPOCH,
                "a newer producer epoch exists",
                {"Producer-Epoch": result.epoch},
            )
        case AppendOutcome.EPOCH_SEQ:
            raise ApiError(INVALID_PRODUCER, "a new producer epoch starts at Producer-Seq 0")
        case AppendOutcome.GAP:
            raise ApiError(
                PRODUCER_SEQUENCE_GAP,
                "a Producer-Seq is missing",
                {
                    "Producer-Expected-Seq": result.expected_seq,
                    "Producer-Received-Seq": result.received_seq,
                },
            )
        case AppendOutcome.ALREADY_CLOSED:
            return _Written(
                204, [(b"stream-next-offset", tail.encode()), _STREAM_CLOSED, _CROSS_ORIGIN]
            )
    if result.linked:
        await _subscriptions_see(request, name, linked=result.linked)
    headers = [(b"stream-next-offset", tail.encode())]
    if close or result.outcome is AppendOutcome.DUPLICATE_CLOSED:
        headers.append(_STREAM_CLOSED)
    status = 204
    if writer is not None:
        headers.append((b"producer-epoch", result.epoch.encode()))
        headers.append((b"producer-seq", result.seq.encode()))
        if result.outcome is AppendOutcome.OK and has_messages:
            status = 200
    headers.append(_CROSS_ORIGIN)
    return _Written(status, headers)


async def _read(request: Request, source: Source) -> Response:
    services = _services(request)
    settings = services.settings
    query = request.query_params
    live = query.get("live")
    if live not in (None, "long-poll", "sse"):
        raise ApiError(INVALID_LIVE, "live must be long-poll or sse")
    if live is not None and "offset" not in query:
        raise ApiError(MISSING_OFFSET, "a live read needs an offset")
    state = await source.view.state()
    if state is None:
        raise _not_found(request.url.path)
    start, now, from_start = parse_offset(query.get("offset"), state.tail)
    read = Read(
        start,
        now=now,
        from_start=from_start,
        client_cursor=query.get("cursor"),
        expires_at=principal_of(request).expires_at,
    )
    if live == "sse":
        # Checked before the stream starts: a read from a trimmed offset is an error, not data.
        await read_batch(source, state, start, 1, from_start=from_start)
        headers = list(SSE_HEADERS)
        if not is_text(source.media_type):
            headers.append(BASE64)
        # Counted like a conversation's SSE streams: the per-stream bound on this process
        # (BROKER_MAX_STREAMS_PER_CONVERSATION) and the open-streams gauge.
        release = services.admit_stream(source.stream_key, client_address(request.scope))
        events = sse_events(
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
            source.content_type, state.tail, up_to_date=True, closed=state.closed, cursor_value=None
        )
        headers["Cache-Control"] = _NO_STORE
        return Response(body_of(source.media_type, []), headers=headers)
    batch = None
    if not now:
        batch = await read_batch(source, state, start, settings.replay_batch, from_start=from_start)
    if live == "long-poll" and (batch is None or not batch.messages):
        if state.closed and start >= state.tail:
            headers = read_headers(
                source.content_type, state.tail, up_to_date=True, closed=True, cursor_value=None
            )
            return Response(status_code=204, headers=headers)
        batch, state = await long_poll(
            services.hub, source, read, settings.replay_batch, settings.ds_long_poll_seconds
        )
        if batch is None:
            closed = state.closed and start >= state.tail
            headers = read_headers(
                source.content_type,
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
        source.content_type,
        batch.next_pos,
        up_to_date=up_to_date,
        closed=closed,
        cursor_value=cursor(read.client_cursor),
    )
    headers["ETag"] = etag(source.etag_id, start, batch.next_pos, closed)
    headers["Cache-Control"] = _cache_control(request)
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers={"ETag": headers["ETag"]})
    return Response(body_of(source.media_type, batch.messages), headers=headers)


def _cross_origin(endpoint: Endpoint) -> Endpoint:
    """Streams are read by pages on other origins (CORS decides which): say so to the browser."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        response = await endpoint(request)
        if isinstance(response, Response) and not isinstance(response, _Written):
            response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        return response

    return answer


_NAME = {"name": "the stream's name: one or more path segments"}
_READ_PARAMS = (
    Param(
        "offset",
        "query",
        {"type": "string"},
        "`-1` (the start, the default), `now` (the tail), or a Stream-Next-Offset",
    ),
    Param(
        "live",
        "query",
        {"enum": ["long-poll", "sse"]},
        "wait for data (long-poll) or stream it (Server-Sent Events)",
    ),
    Param("cursor", "query", {"type": "string"}, "the last Stream-Cursor, echoed"),
)
# Any bytes: JSON in a JSON-mode stream (or a conversation read as one), anything otherwise.
_ANY = Raw(("*/*",), {})
_EVENTS = Events(
    "DurableStreamEvent",
    (
        Frame(
            "data",
            {"type": "string"},
            "the messages from the offset (a JSON array in a JSON stream; base64 for binary "
            "content, see Stream-SSE-Data-Encoding)",
        ),
        Frame("control", ControlEvent, "where the stream stands after the data before it"),
        Frame(
            "error",
            ReadEnd,
            "the last event of a read the server ends because its token expired "
            "(`token_expired`): read on from the last offset with a fresh token",
        ),
    ),
    "Data and control events, until the stream closes or the read's time is up.",
)
_READ_REPLIES = (
    Reply(200, "data from the offset, or an SSE stream of data and control events", _ANY),
    Reply(200, "an SSE read (`live=sse`)", _EVENTS),
    Reply(204, "long-poll: nothing arrived in time, or the stream is closed"),
    Reply(304, "unchanged since the ETag sent in If-None-Match"),
)
_READ_ERRORS = (
    INVALID_OFFSET,
    INVALID_LIVE,
    MISSING_OFFSET,
    OFFSET_GONE,
    TOO_MANY_STREAMS,
    FRONT_FULL,
    TOKEN_EXPIRED,
)
_READ_DESCRIPTION = (
    "Catch-up (200, data from the offset; Stream-Next-Offset, Stream-Up-To-Date, "
    "Stream-Closed, ETag), long-poll (200, or 204 when the wait ends with nothing) or SSE "
    "(`data` and `control` events). HEAD answers the metadata alone: Content-Type, "
    "Stream-Next-Offset, Stream-TTL or Stream-Expires-At, Stream-Closed, with Cache-Control: "
    "no-store."
)


def _read_doc(operation: str, summary: str, *errors: ErrorCode, **path: str) -> Doc:
    return Doc(
        operation,
        summary,
        "durable-streams",
        _READ_DESCRIPTION,
        params=_READ_PARAMS,
        replies=_READ_REPLIES,
        errors=(*_READ_ERRORS, *errors),
        path_params=path,
    )


def _read_only(operation: str) -> Doc:
    return Doc(
        operation,
        "Refused: a conversation's stream is written by posting messages",
        "durable-streams",
        errors=(METHOD_NOT_ALLOWED, CONVERSATION_NOT_FOUND),
    )


# A read holds one of its subject's open streams (BROKER_LIMIT_STREAMS_PER_SUBJECT) while it is
# served: a long-poll while it waits, an SSE read until it ends. Writes cost one request.
_READS = ["GET", "HEAD"]
_CONVERSATION_READ = _read_doc(
    "readConversationStream",
    "A conversation as a read-only JSON stream",
    FORBIDDEN,
    CONVERSATION_NOT_FOUND,
    STREAM_NOT_FOUND,
)
_STREAM_READ = _read_doc(
    "readStream", "Read a stream", INVALID_STREAM_NAME, STREAM_NOT_FOUND, STREAM_GONE, **_NAME
)


class _StreamRoute(ApiRoute):
    """A route of the streams themselves. Like the conversations' views before them, they
    are served below the router (``streaming``): their SSE reads pass through nothing more,
    and a write, the hot path of a producer, is not matched against every route of the app
    first. So they must not take what the subscription routes serve, which come before them
    in the router but not there: no stream is named under the reserved ``__ds`` prefix."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            name: str = child["path_params"]["name"]
            if name == _RESERVED or name.startswith(_RESERVED + "/"):
                return Match.NONE, {}
        return match, child


_RESERVED = "__ds"


routes = [
    ApiRoute(
        PREFIX + CONVERSATIONS + "{cid}",
        _cross_origin(conversation),
        methods=_READS,
        access=Access.READ,
        cost=Cost.STREAM,
        doc=_CONVERSATION_READ,
        streaming=True,
    ),
    ApiRoute(
        PREFIX + CONVERSATIONS + "{cid}",
        _cross_origin(conversation),
        methods=list(_WRITES),
        access=Access.READ,
        doc={
            "PUT": _read_only("createConversationStream"),
            "POST": _read_only("appendConversationStream"),
            "DELETE": _read_only("deleteConversationStream"),
        },
        streaming=True,
    ),
    _StreamRoute(
        PREFIX + "{name:path}",
        _cross_origin(stream),
        methods=_READS,
        access=Access.SUBJECT,
        cost=Cost.STREAM,
        doc=_STREAM_READ,
        streaming=True,
    ),
    _StreamRoute(
        PREFIX + "{name:path}",
        _cross_origin(stream),
        methods=list(_WRITES),
        access=Access.SUBJECT,
        doc={
            "PUT": Doc(
                "createStream",
                "Create a stream (Content-Type, Stream-TTL or Stream-Expires-At, "
                "Stream-Closed, an optional first body), or fork one (Stream-Forked-From, "
                "Stream-Fork-Offset, Stream-Fork-Sub-Offset)",
                "durable-streams",
                body=_ANY,
                body_required=False,
                replies=(
                    Reply(201, "created; Location, Stream-Next-Offset"),
                    Reply(200, "it existed with the same configuration"),
                ),
                errors=(
                    INVALID_STREAM_NAME,
                    INVALID_TTL,
                    INVALID_EXPIRES_AT,
                    INVALID_EXPIRY,
                    MALFORMED_JSON,
                    BODY_TOO_LARGE,
                    TOO_MANY_MESSAGES,
                    STREAM_NOT_FOUND,
                    STREAM_EXISTS,
                    NOT_FOUND,
                    INVALID_FORK,
                    INVALID_SUB_OFFSET,
                    INVALID_OFFSET,
                    SOURCE_DELETED,
                    CONTENT_TYPE_MISMATCH,
                    RATE_LIMITED,
                    TOO_MANY_STREAMS_CREATED,
                    STORAGE_QUOTA_EXCEEDED,
                    STREAM_TOO_LARGE,
                ),
                path_params=_NAME,
            ),
            "POST": Doc(
                "appendStream",
                "Append (Stream-Seq, Producer-Id/-Epoch/-Seq) and/or close (Stream-Closed: true)",
                "durable-streams",
                body=_ANY,
                body_required=False,
                replies=(
                    Reply(200, "appended by an idempotent producer"),
                    Reply(204, "appended, closed, or a producer's duplicate"),
                ),
                errors=(
                    INVALID_STREAM_NAME,
                    INVALID_PRODUCER,
                    EMPTY_BODY,
                    EMPTY_ARRAY,
                    MISSING_CONTENT_TYPE,
                    MALFORMED_JSON,
                    BODY_TOO_LARGE,
                    TOO_MANY_MESSAGES,
                    INVALID_SEQ,
                    STALE_PRODUCER_EPOCH,
                    STREAM_NOT_FOUND,
                    STREAM_CLOSED,
                    CONTENT_TYPE_MISMATCH,
                    SEQUENCE_CONFLICT,
                    PRODUCER_SEQUENCE_GAP,
                    NOT_FOUND,
                    STREAM_GONE,
                    RATE_LIMITED,
                    STORAGE_QUOTA_EXCEEDED,
                    STREAM_TOO_LARGE,
                ),
                path_params=_NAME,
            ),
            "DELETE": Doc(
                "deleteStream",
                "Delete a stream and its data",
                "durable-streams",
                replies=(Reply(204, "deleted"),),
                errors=(INVALID_STREAM_NAME, STREAM_NOT_FOUND, NOT_FOUND, STREAM_GONE),
                path_params=_NAME,
            ),
        },
        streaming=True,
    ),
]
