"""The routes an AI SDK app points ``useChat`` at: ``api: "<broker>/v1/ai-sdk/chat"``.

The chat id is the conversation id. Every route is guarded like the v1 routes (the chat POST
names its conversation in the body, so the guard finds it there); posting, opening a stream and
cancelling are the front's own functions, only the wire is the SDK's.

- ``POST /v1/ai-sdk/chat``: the last user message's text parts are the prompt of a new run
  (``submit-message`` and ``regenerate-message`` alike; the rest of ``messages`` is ignored, the
  broker owns the history); the answer is that run's UI message stream. The connection only
  reads the run: closing it changes nothing.
- ``GET /v1/ai-sdk/chat/{cid}/stream``: the active run's whole answer from its ``start`` chunk,
  then live; 204 when nothing is being generated (also for a chat that does not exist, or that
  the caller may not read).
- ``POST /v1/ai-sdk/chat/{cid}/stop``: the v1 cancel of the active run.
- ``GET /v1/ai-sdk/chat/{cid}/messages``: the conversation as ``UIMessage[]``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

import msgspec
import redis.exceptions
from starlette.requests import Request
from starlette.responses import Response

from broker.core.bodies import PostMessage
from broker.core.catalogue import DEFAULT_MODEL
from broker.core.entries import entry_from_redis
from broker.core.events import decode
from broker.core.ids import ORIGIN, is_valid_path_id
from broker.front.actions.posting import idempotency_key_of, post_message
from broker.front.http.bodies import decode_json_object, read_body, require_json
from broker.front.http.errors import ApiError
from broker.front.routes import conversations as api
from broker.front.security.access import Access, GuardedRoute, admission_of
from broker.front.security.browsers import NO_STORE
from broker.front.security.limits import Cost
from broker.front.services import Services
from broker.front.streaming.feed import Feed
from broker.front.streaming.opening import open_run_feed
from broker.front.streaming.sse import EventStreamResponse
from broker.protocols.ai_sdk import (
    HEADERS,
    ConversationMessages,
    UiMessageStream,
    error_frame,
)

log = logging.getLogger("broker.protocols.ai_sdk")
_encoder = msgspec.json.Encoder()
PREFIX = "/v1/ai-sdk/chat"


class _Part(msgspec.Struct):
    type: str
    text: Any = None


class _Message(msgspec.Struct):
    role: str
    parts: list[_Part] = []


class ChatRequest(msgspec.Struct, rename="camel"):
    """What ``DefaultChatTransport`` posts, plus ``model`` and ``params`` an app may add through
    the transport's ``body``; other fields are ignored."""

    id: str
    messages: list[_Message]
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: str | None = None
    model: str = DEFAULT_MODEL
    params: dict[str, Any] = {}

    def prompt(self) -> str:
        """The text parts of the last user message; everything else is the broker's to know."""
        for message in reversed(self.messages):
            if message.role == "user":
                return "\n".join(
                    p.text for p in message.parts if p.type == "text" and isinstance(p.text, str)
                )
        raise ApiError(422, "invalid_field", "messages: no user message to answer")


async def chat_of(request: Request) -> str:
    """The guard's way to the conversation of a chat POST: the body's ``id``. The decoded body
    stays on the request for the handler."""
    idempotency_key_of(request)
    services: Services = request.state.services
    require_json(request)
    body = await read_body(request, services.settings.max_body_bytes)
    chat = decode_json_object(body, ChatRequest)
    if not is_valid_path_id(chat.id):
        raise ApiError(400, "invalid_id", "id must match [A-Za-z0-9_-]{1,128}")
    request.state.chat = chat
    return chat.id


async def _ui_body(feed: Feed) -> AsyncIterator[bytes]:
    try:
        async with aclosing(feed.frames()) as frames:
            async for chunk in frames:
                if chunk:
                    yield chunk
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        log.warning("ending a UI message stream: Redis unreachable")
        feed.ended = "redis_unavailable"
        yield error_frame("redis_unavailable", "the store is unreachable; resume shortly")


async def _run_stream(request: Request, cid: str, run_id: str) -> EventStreamResponse:
    run = await open_run_feed(request, cid, run_id, writer=UiMessageStream(run_id))
    return EventStreamResponse(_ui_body(run.feed), run.release, HEADERS)


async def chat(request: Request) -> Response:
    chat: ChatRequest = request.state.chat
    message = PostMessage(content=chat.prompt(), model=chat.model, params=chat.params)
    accepted = await post_message(request, chat.id, message, idempotency_key_of(request))
    return await _run_stream(request, chat.id, accepted.run_id)


async def resume(request: Request) -> Response:
    services: Services = request.state.services
    cid = request.path_params["cid"]
    if admission_of(request).exists is False:
        return Response(status_code=204)
    active = await services.store.active_run(cid)
    if active is None:
        return Response(status_code=204)
    return await _run_stream(request, cid, active)


async def messages(request: Request) -> Response:
    services: Services = request.state.services
    cid = request.path_params["cid"]
    folded = ConversationMessages()
    if admission_of(request).exists is not False:
        position = ORIGIN
        batch = services.settings.replay_batch
        while True:
            raw = await services.store.read_after(cid, position, batch)
            for entry_id, fields in raw:
                position = entry_from_redis(entry_id, fields).pos
                folded.add(decode(fields[b"t"].decode(), fields[b"d"]))
            if len(raw) < batch:
                break
    body = _encoder.encode(folded.messages)
    return Response(body, headers=NO_STORE, media_type="application/json")


routes = [
    GuardedRoute(
        PREFIX, chat, methods=["POST"], access=Access.POST, cost=Cost.POST, conversation=chat_of
    ),
    GuardedRoute(
        PREFIX + "/{cid}/stream", resume, methods=["GET"], access=Access.PEEK, cost=Cost.STREAM
    ),
    GuardedRoute(PREFIX + "/{cid}/stop", api.cancel, methods=["POST"], access=Access.WRITE),
    GuardedRoute(PREFIX + "/{cid}/messages", messages, methods=["GET"], access=Access.PEEK),
]
