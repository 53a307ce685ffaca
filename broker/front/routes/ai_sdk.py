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

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from broker.core.bodies import PostMessage
from broker.core.entries import entry_event
from broker.core.errors import FRONT_FULL, INVALID_ID, TOO_MANY_STREAMS
from broker.core.ids import check_id
from broker.front.actions import cancelling, posting
from broker.front.http.bodies import decode_json_object, read_body, require_json
from broker.front.http.docs import Doc, Events, Frame, Json, Reply
from broker.front.routes.declare import ApiRoute
from broker.front.routes.v1 import CANCEL_REPLIES, WAIT, wait_seconds
from broker.front.security.access import Access, admission_of
from broker.front.security.headers import NO_STORE
from broker.front.security.limits import Cost
from broker.front.services import Services
from broker.front.streaming.feed import frames_of
from broker.front.streaming.opening import open_run_feed
from broker.front.streaming.sse import EventStreamResponse
from broker.protocols.ai_sdk import (
    CHUNK_TYPES,
    HEADERS,
    ChatRequest,
    ConversationMessages,
    UiMessage,
    UiMessageStream,
    error_frame,
)

PREFIX = "/v1/ai-sdk/chat"
_encoder = msgspec.json.Encoder()
_UNAVAILABLE = error_frame("redis_unavailable", "the store is unreachable; resume shortly")


async def chat_of(request: Request) -> str:
    """The guard's way to the conversation of a chat POST: the body's ``id``. The decoded body
    stays on the request for the handler."""
    posting.idempotency_key_of(request)
    services: Services = request.state.services
    require_json(request)
    body = await read_body(request, services.settings.max_body_bytes)
    chat = decode_json_object(body, ChatRequest)
    check_id(chat.id, "id")
    request.state.chat = chat
    return chat.id


async def _run_stream(request: Request, cid: str, run_id: str) -> EventStreamResponse:
    services: Services = request.state.services
    run = await open_run_feed(request, cid, run_id, writer=UiMessageStream(run_id))
    body = frames_of(run.feed, services.metrics, unavailable=_UNAVAILABLE)
    return EventStreamResponse(body, run.release, HEADERS)


async def chat(request: Request) -> Response:
    chat: ChatRequest = request.state.chat
    message = PostMessage(content=chat.prompt(), model=chat.model, params=chat.params)
    accepted = await posting.post_message(
        request, chat.id, message, posting.idempotency_key_of(request)
    )
    return await _run_stream(request, chat.id, accepted.run_id)


async def resume(request: Request) -> Response:
    services: Services = request.state.services
    cid = request.path_params["cid"]
    if admission_of(request).exists is False:
        return Response(status_code=204)
    active = await services.engine.conversations.active_run(cid)
    if active is None:
        return Response(status_code=204)
    return await _run_stream(request, cid, active)


async def stop(request: Request) -> Response:
    """The v1 cancel of the chat's active run."""
    services: Services = request.state.services
    cid = check_id(request.path_params["cid"], "cid")
    wait = wait_seconds(request, services.settings.cancel_wait_seconds)
    status, state = await cancelling.cancel(
        services.engine, cid, cancelling.ACTIVE, wait, services.draining
    )
    return Response(_encoder.encode(state), status, media_type="application/json")


async def messages(request: Request) -> Response:
    services: Services = request.state.services
    cid = request.path_params["cid"]
    folded = ConversationMessages()
    if admission_of(request).exists is not False:
        async for page in services.engine.conversations.pages(cid):
            for entry in page:
                folded.add(entry_event(entry))
    body = _encoder.encode(folded.messages)
    return Response(body, headers=NO_STORE, media_type="application/json")


def _tag(chunk: Any) -> str:
    return chunk.__struct_config__.tag or "data-<name>"


_UI_STREAM = Events(
    "UiMessageChunk",
    tuple(Frame(None, chunk, f"a `{_tag(chunk)}` chunk") for chunk in CHUNK_TYPES),
    "The AI SDK's UI message stream (header `x-vercel-ai-ui-message-stream: v1`): one "
    "`data: <chunk JSON>` line per chunk, ending with `data: [DONE]`.",
)
_CHAT_ID = {"cid": "the chat id, which is the conversation id"}

routes = [
    ApiRoute(
        PREFIX,
        chat,
        methods=["POST"],
        access=Access.POST,
        cost=Cost.POST,
        conversation=chat_of,
        doc=Doc(
            "aiSdkChat",
            "Send the chat's last user message; answers with its run's UI stream",
            "ai-sdk",
            "Closing this response only stops reading: the run goes on.",
            body=Json(ChatRequest),
            replies=(Reply(200, "the run's answer as the UI message stream", _UI_STREAM),),
            errors=(INVALID_ID, *posting.ERRORS),
        ),
    ),
    ApiRoute(
        PREFIX + "/{cid}/stream",
        resume,
        methods=["GET"],
        access=Access.PEEK,
        cost=Cost.STREAM,
        doc=Doc(
            "aiSdkResume",
            "The active run's answer from its start, then live (`resume: true`)",
            "ai-sdk",
            replies=(
                Reply(200, "the active run's answer as the UI message stream", _UI_STREAM),
                Reply(204, "nothing is being generated in this chat"),
            ),
            errors=(
                TOO_MANY_STREAMS,
                FRONT_FULL,
            ),
            path_params=_CHAT_ID,
        ),
    ),
    ApiRoute(
        PREFIX + "/{cid}/stop",
        stop,
        methods=["POST"],
        access=Access.WRITE,
        doc=Doc(
            "aiSdkStop",
            "Stop the chat's active run (the v1 cancel)",
            "ai-sdk",
            params=(WAIT,),
            replies=CANCEL_REPLIES,
            errors=cancelling.ERRORS,
            path_params=_CHAT_ID,
        ),
    ),
    ApiRoute(
        PREFIX + "/{cid}/messages",
        messages,
        methods=["GET"],
        access=Access.PEEK,
        doc=Doc(
            "aiSdkMessages",
            "The conversation as the AI SDK's `UIMessage[]`",
            "ai-sdk",
            replies=(
                Reply(200, "the messages", Json(list[UiMessage]), ("Cache-Control: no-store",)),
            ),
            path_params=_CHAT_ID,
        ),
    ),
]
