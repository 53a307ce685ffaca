"""``BrokerClient``: the blocking client, on ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

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


class BrokerClient:
    """A blocking client of one broker.

    Streams resume by themselves after a disconnect, from the last event they yielded; after
    ``max_attempts`` consecutive failures they raise ``ReconnectFailed``. Use it as a context
    manager, or call ``close()``.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout: float = 30.0,
        read_timeout: float = 60.0,
        max_attempts: int = 8,
        max_backoff: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = wire.checked_token(token)
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        # A stream is silent for at most the keepalive interval (15 s by default); a read that
        # waits longer than read_timeout means the connection is dead.
        self._stream_timeout = httpx.Timeout(timeout, read=read_timeout)
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(
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

    def send(
        self,
        cid: str,
        content: str,
        *,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> MessageAccepted:
        """Post a message; its run starts in a worker. Retried (with the same idempotency key,
        so never twice) when the broker does not answer or is briefly unavailable."""
        body = wire.message_body(content, model, params)
        headers = wire.send_headers(self.token, idempotency_key)
        for attempt in range(1, wire.SEND_ATTEMPTS + 1):
            try:
                response = self._request(
                    "POST", f"{wire.conversation_path(cid)}/messages", content=body, headers=headers
                )
                return _accepted.decode(response.content)
            except BrokerError as exc:
                if attempt == wire.SEND_ATTEMPTS or not (exc.status == 0 or exc.status >= 500):
                    raise
                time.sleep(exc.retry_after or 0.5 * attempt)
        raise AssertionError("unreachable")

    def cancel(self, cid: str, run_id: str | None = None, *, wait: bool = False) -> CancelState:
        """Stop a run (the active one by default); with ``wait``, return once it has ended."""
        response = self._request("POST", wire.cancel_path(cid, run_id, wait))
        return _cancel_state.decode(response.content)

    def snapshot(self, cid: str) -> Snapshot:
        """The merged conversation; stream after its ``last_event_id`` to follow it."""
        return _snapshot.decode(self._request("GET", wire.conversation_path(cid)).content)

    def list_conversations(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> ConversationPage:
        """One page of the caller's conversations, newest activity first; pass its
        ``next_cursor`` as ``cursor`` for the next page (None: that was the last)."""
        response = self._request("GET", wire.list_path(limit, cursor))
        return _page.decode(response.content)

    def delete_conversation(self, cid: str) -> None:
        """Delete the conversation and everything stored of it; its active run is cancelled
        first and its open streams end with ``StreamEndedError`` ``conversation_deleted``."""
        self._request("DELETE", wire.conversation_path(cid))

    def models(self) -> ModelList:
        return _models.decode(self._request("GET", "/v1/models").content)

    def stream(self, cid: str, after: str | None = None) -> EventStream:
        """Every event of the conversation after ``after`` (from the start when None), then
        live ones, forever. A ``Reset`` item means: drop what you have, a full replay follows."""
        return EventStream(self, f"{wire.conversation_path(cid)}/stream", StreamTracker(after))

    def stream_run(self, cid: str, run_id: str = "active", after: str | None = None) -> EventStream:
        """One run's events, ending after its terminal event; nothing when no run is active."""
        tracker = StreamTracker(after, run_id=run_id)
        return EventStream(self, "", tracker, cid=cid)

    def ask(
        self,
        cid: str,
        content: str,
        *,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Answer:
        """Send, then iterate the answer's text pieces until the run ends."""
        accepted = self.send(
            cid, content, model=model, params=params, idempotency_key=idempotency_key
        )
        return Answer(accepted, self.stream_run(cid, accepted.run_id))


class EventStream:
    """An iterator of typed events (``broker.core.events`` structs, ``Reset``,
    ``UnknownEvent``) that reconnects by itself. ``last_event_id`` is the id of the last event
    yielded: where a later stream can resume."""

    def __init__(
        self, client: BrokerClient, path: str, tracker: StreamTracker, *, cid: str | None = None
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

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> StreamItem:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self) -> str:
        if self._cid is not None:
            assert self._tracker.run_id is not None
            return f"{wire.run_path(self._cid, self._tracker.run_id)}/stream"
        return self._path

    def _run_is_over(self) -> bool:
        """A run's stream closed at once with nothing new: is that run over already?"""
        if self._cid is None or self._tracker.run_id in (None, "active"):
            return False
        return self._client.snapshot(self._cid).active_run_id != self._tracker.run_id

    def _run(self) -> Iterator[StreamItem]:
        client, tracker = self._client, self._tracker
        backoff = Backoff(max_attempts=client.max_attempts, max_delay=client.max_backoff)
        while not tracker.finished:
            headers = wire.stream_headers(client.token, tracker.last_event_id)
            try:
                with client._http.stream(
                    "GET", self._url(), headers=headers, timeout=client._stream_timeout
                ) as response:
                    if response.status_code == 204:
                        return
                    if not response.is_success:
                        response.read()
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
                        for chunk in response.iter_bytes():
                            for sse in parser.feed(chunk):
                                item = tracker.accept(sse)
                                if item is not None:
                                    delivered += 1
                                    yield item
                                if tracker.finished:
                                    return
                            if parser.retry_ms is not None:
                                backoff.retry = parser.retry_ms / 1000
                        if not delivered and self._run_is_over():
                            return  # resumed after its terminal event: nothing more will come
                        delay = backoff.after_end()
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__} at {client.base_url}"
                try:
                    delay = backoff.after_failure(reason, tracker.last_event_id)
                except BrokerError as gave_up:
                    raise gave_up from exc
            time.sleep(delay)


class Answer:
    """The text pieces of one run's answer, as they arrive. After the iteration: ``text``,
    ``reasoning`` and ``outcome`` (the terminal event). A failed run raises ``RunFailedError``."""

    def __init__(self, accepted: MessageAccepted, events: EventStream) -> None:
        self.accepted = accepted
        self.run_id = accepted.run_id
        self._events = events
        self._pieces = self._run()
        self.text = ""
        self.reasoning = ""
        self.outcome: RunCompleted | RunCancelled | RunFailedEvent | None = None

    def __iter__(self) -> Answer:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()
        self._events.close()

    def _run(self) -> Iterator[str]:
        for event in self._events:
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
