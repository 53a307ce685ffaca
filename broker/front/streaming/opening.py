"""Opening a client's stream: the feed of a conversation or of one run, for API version 1 and
every adapter.

A stream is admitted against this process's per-conversation limit (the per-subject lease was
taken by the guard) and ends when the token that opened it expires; an adapter only chooses how
the feed's entries are written on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from starlette.requests import Request

from broker.core.errors import RUN_NOT_FOUND, ApiError
from broker.core.ids import StreamPos, parse_stream_id, predecessor
from broker.front.http.observe import access_of
from broker.front.security.access import conversation_not_found
from broker.front.security.addresses import client_address
from broker.front.security.principal import principal_of
from broker.front.services import Services
from broker.front.streaming.feed import Feed, FrameWriter, resolve_start


class OpenFeed(NamedTuple):
    feed: Feed
    release: Callable[[], None]  # the stream's admission, released when the response ends


class RunFeed(NamedTuple):
    feed: Feed
    release: Callable[[], None]
    reset: bytes  # a `reset` frame to send first, when the client's position is not in the stream


def open_feed(
    request: Request,
    cid: str,
    position: StreamPos,
    *,
    run_id: str | None = None,
    writer: FrameWriter | None = None,
    exact: bool = False,
    opened: Callable[[], None] | None = None,
) -> OpenFeed:
    """Admit a new stream of ``cid`` (or refuse it: 429) and make its feed after ``position``,
    written by ``writer`` (None: the broker's own SSE frames). ``exact``: the position is a
    checked entry of the stream; ``opened``: see ``feed.Openings``."""
    services: Services = request.state.services
    release = services.admit_stream(cid, client_address(request.scope))
    feed = services.feed(
        cid,
        position,
        run_id=run_id,
        expires_at=principal_of(request).expires_at,
        writer=writer,
        exact=exact,
        opened=opened,
    )
    access = access_of(request.scope)
    if access is not None:
        access.feed = feed  # its access log line reports what the feed sent, and why it ended
    return OpenFeed(feed, release)


async def open_run_feed(
    request: Request,
    cid: str,
    run_id: str,
    last_event_id: StreamPos | None = None,
    *,
    writer: FrameWriter | None = None,
) -> RunFeed:
    """The feed of one run from its user message (or after ``last_event_id``), ended by its
    terminal event.

    Raises 404 ``run_not_found`` for a run the conversation does not have (404
    ``conversation_not_found`` when the conversation itself is unknown).
    """
    services: Services = request.state.services
    conversations = services.engine.conversations
    record = await conversations.run(cid, run_id)
    if record is None:
        if not await conversations.exists(cid):
            raise conversation_not_found(cid)
        raise ApiError(RUN_NOT_FOUND, f"no run {run_id} in conversation {cid}")
    message_pos = parse_stream_id(record.message_event_id)
    assert message_pos is not None
    position = predecessor(message_pos)
    reset = b""
    if last_event_id is not None:
        # Checked exactly as on the conversation stream: a position that is not one of this
        # stream's (from the future, or another conversation) gets `reset` and the whole run.
        start = await resolve_start(conversations, cid, last_event_id)
        if start is None:
            raise conversation_not_found(cid)
        position = max(position, start.position)
        reset = start.reset or b""
        if reset:
            services.metrics.resets.inc()
    feed, release = open_feed(request, cid, position, run_id=run_id, writer=writer)
    terminal = parse_stream_id(record.terminal_event_id)
    if record.ended and terminal is not None and position >= terminal:
        feed.finished = True
    return RunFeed(feed, release, reset)
