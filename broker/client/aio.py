"""``AsyncBrokerClient``: the asyncio (anyio) client, on ``httpx.AsyncClient``. The same
calls as ``BrokerClient``, awaited; streams are async iterators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import msgspec

from broker.client import wire
from broker.client.backoff import Backoff
from broker.client.errors import BrokerError, BrokerUnavailable, RunFailedError
from broker.client.sse import SSEParser
from broker.client.tracking import StreamItem, StreamTracker
from broker.core.bodies import (
    CancelState,
    ConversationPage,
    MessageAccepted,
    ModelList,
    Snapshot,
)
from broker.core.events import Delta, RunCancelled, RunCompleted
from broker.core.events import RunFailed as RunFailedEvent

_accepted = msgspec.json.Decoder(MessageAccepted)
_cancel_state = msgspec.json.Decoder(CancelState)
_snapshot = msgspec.json.Decoder(Snapshot)
_models = msgspec.json.Decoder(ModelList)
_page = msgspec.json.Decoder(ConversationPage)


class AsyncBrokerClient:
    """An asynchronous client of one broker; see ``BrokerClient`` for the behaviour."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout: float = 30.0,
        read_timeout: float = 60.0,
        max_attempts: int = 8,
        max_backoff: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = wire.checked_token(token)
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self._stream_timeout = httpx.Timeout(timeout, read=read_timeout)
        self._http = http or httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBrokerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method,
                path,
                content=content,
                headers={**wire.auth_headers(self.token), **(headers or {})},
            )
        except httpx.TransportError as exc:
            raise BrokerUnavailable(self.base_url, type(exc).__name__) from exc
        if response.is_success:
            return response
        raise wire.error_of(response)

    async def send(
        self,
        cid: str,
        content: str,
        *,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> MessageAccepted:
        body = wire.message_body(content, model, params)
        headers = wire.send_headers(self.token, idempotency_key)
        for attempt in range(1, wire.SEND_ATTEMPTS + 1):
            try:
                response = await self._request(
                    "POST", f"{wire.conversation_path(cid)}/messages", content=body, headers=headers
                )
                return _accepted.decode(response.content)
            except BrokerError as exc:
                if attempt == wire.SEND_ATTEMPTS or not (exc.status == 0 or exc.status >= 500):
                    raise
                await anyio.sleep(exc.retry_after or 0.5 * attempt)
        raise AssertionError("unreachable")

    async def cancel(
        self, cid: str, run_id: str | None = None, *, wait: bool = False
    ) -> CancelState:
        response = await self._request("POST", wire.cancel_path(cid, run_id, wait))
        return _cancel_state.decode(response.content)

    async def snapshot(self, cid: str) -> Snapshot:
        return _snapshot.decode((await self._request("GET", wire.conversation_path(cid))).content)

    async def list_conversations(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> ConversationPage:
        """One page of the caller's conversations, newest activity first; pass its
        ``next_cursor`` as ``cursor`` for the next page (None: that was the last)."""
        response = await self._request("GET", wire.list_path(limit, cursor))
        return _page.decode(response.content)

    async def delete_conversation(self, cid: str) -> None:
        """Delete the conversation and everything stored of it; its active run is cancelled
        first and its open streams end with ``StreamEndedError`` ``conversation_deleted``."""
        await self._request("DELETE", wire.conversation_path(cid))

    async def models(self) -> ModelList:
        return _models.decode((await self._request("GET", "/v1/models")).content)

    def stream(self, cid: str, after: str | None = None) -> AsyncEventStream:
        return AsyncEventStream(self, f"{wire.conversation_path(cid)}/stream", StreamTracker(after))

    def stream_run(
        self, cid: str, run_id: str = "active", after: str | None = None
    ) -> AsyncEventStream:
        return AsyncEventStream(self, "", StreamTracker(after, run_id=run_id), cid=cid)

    async def ask(
        self,
        cid: str,
        content: str,
        *,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncAnswer:
        """Send, and return the answer's text pieces as an async iterator."""
        accepted = await self.send(
            cid, content, model=model, params=params, idempotency_key=idempotency_key
        )
        return AsyncAnswer(accepted, self.stream_run(cid, accepted.run_id))


class AsyncEventStream:
    """An async iterator of typed events that reconnects by itself; see ``EventStream``."""

    def __init__(
        self,
        client: AsyncBrokerClient,
        path: str,
        tracker: StreamTracker,
        *,
        cid: str | None = None,
    ) -> None:
        self._client = client
        self._path = path
        self._cid = cid
        self._tracker = tracker
        self._events = self._run()

    @property
    def last_event_id(self) -> str | None:
        return self._tracker.last_event_id

    @property
    def run_id(self) -> str | None:
        return self._tracker.run_id

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> StreamItem:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _url(self) -> str:
        if self._cid is not None:
            assert self._tracker.run_id is not None
            return f"{wire.run_path(self._cid, self._tracker.run_id)}/stream"
        return self._path

    async def _run_is_over(self) -> bool:
        """A run's stream closed at once with nothing new: is that run over already?"""
        if self._cid is None or self._tracker.run_id in (None, "active"):
            return False
        snapshot = await self._client.snapshot(self._cid)
        return snapshot.active_run_id != self._tracker.run_id

    async def _run(self) -> AsyncIterator[StreamItem]:
        client, tracker = self._client, self._tracker
        backoff = Backoff(max_attempts=client.max_attempts, max_delay=client.max_backoff)
        while not tracker.finished:
            headers = wire.stream_headers(client.token, tracker.last_event_id)
            try:
                async with client._http.stream(
                    "GET", self._url(), headers=headers, timeout=client._stream_timeout
                ) as response:
                    if response.status_code == 204:
                        return
                    if not response.is_success:
                        await response.aread()
                        error = wire.error_of(response)
                        if not wire.retriable(error):
                            raise error
                        delay = backoff.after_failure(
                            str(error), tracker.last_event_id, error.retry_after
                        )
                    else:
                        backoff.connected()
                        parser = SSEParser()
                        delivered = 0
                        async for chunk in response.aiter_bytes():
                            for sse in parser.feed(chunk):
                                item = tracker.accept(sse)
                                if item is not None:
                                    delivered += 1
                                    yield item
                                if tracker.finished:
                                    return
                            if parser.retry_ms is not None:
                                backoff.retry = parser.retry_ms / 1000
                        if not delivered and await self._run_is_over():
                            return  # resumed after its terminal event: nothing more will come
                        delay = backoff.after_end()
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__} at {client.base_url}"
                try:
                    delay = backoff.after_failure(reason, tracker.last_event_id)
                except BrokerError as gave_up:
                    raise gave_up from exc
            await anyio.sleep(delay)


class AsyncAnswer:
    """The text pieces of one run's answer; see ``Answer``."""

    def __init__(self, accepted: MessageAccepted, events: AsyncEventStream) -> None:
        self.accepted = accepted
        self.run_id = accepted.run_id
        self._events = events
        self._pieces = self._run()
        self.text = ""
        self.reasoning = ""
        self.outcome: RunCompleted | RunCancelled | RunFailedEvent | None = None

    def __aiter__(self) -> AsyncAnswer:
        return self

    async def __anext__(self) -> str:
        return await self._pieces.__anext__()

    async def aclose(self) -> None:
        await self._pieces.aclose()
        await self._events.aclose()

    async def _run(self) -> AsyncIterator[str]:
        async for event in self._events:
            if isinstance(event, Delta) and event.run_id == self.run_id:
                if event.channel == "reasoning":
                    self.reasoning += event.text
                else:
                    self.text += event.text
                    yield event.text
            elif isinstance(event, RunCompleted | RunCancelled | RunFailedEvent):
                if event.run_id != self.run_id:
                    continue
                self.outcome = event
                if isinstance(event, RunFailedEvent):
                    raise RunFailedError(event.run_id, event.error.code, event.error.message)
