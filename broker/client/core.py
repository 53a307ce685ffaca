"""What the blocking and the asyncio client do, written once and without I/O.

Each call of a client (post a message, cancel, read a snapshot, follow a stream) is a generator
of *steps*: it yields the I/O it needs (``broker.client.effects``: ``Request``, ``OpenStream``,
``ReadChunk``, ``Sleep``, ...) and receives the result at that point, or has the failure raised
there. The retry of a send, the reconnect and resume of a stream, the checks of every answer
and the folding of an answer's pieces all live in these generators; ``broker.client.sync``
performs the steps on ``httpx.Client`` and ``broker.client.aio`` on ``httpx.AsyncClient`` with
anyio, and neither decides anything. A stream's steps also yield ``Emit``: an item for the
caller.

The base classes here hold the state both faces share; each face adds only the protocol of its
kind (``close`` or ``aclose``, ``__next__`` or ``__anext__``) and the loop that performs steps.
"""

from __future__ import annotations

from typing import Any, Generic, TypedDict, TypeVar

import httpx
import msgspec

from broker.client import wire
from broker.client.backoff import Backoff
from broker.client.effects import (
    CloseStream,
    Emit,
    OpenStream,
    ReadBody,
    ReadChunk,
    Request,
    Sleep,
    Steps,
    StreamSteps,
)
from broker.client.errors import BrokerError, BrokerUnavailable, RunFailedError
from broker.client.tracking import StreamItem, StreamTracker
from broker.core.bodies import CancelState, ConversationPage, MessageAccepted, ModelList, Snapshot
from broker.core.events import Delta, RunCancelled, RunCompleted
from broker.core.events import RunFailed as RunFailedEvent
from broker.core.sse import SSEParser

H = TypeVar("H", httpx.Client, httpx.AsyncClient)
S = TypeVar("S")  # a face's event stream
It = TypeVar("It")  # a face's iterator (of stream items, of text pieces)
Client = TypeVar("Client", bound="ClientCore[Any, Any]")

_accepted = msgspec.json.Decoder(MessageAccepted)
_cancel_state = msgspec.json.Decoder(CancelState)
_snapshot = msgspec.json.Decoder(Snapshot)
_models = msgspec.json.Decoder(ModelList)
_page = msgspec.json.Decoder(ConversationPage)


# ----- the clients -----


class SendOptions(TypedDict, total=False):
    """What ``send`` and ``ask`` of both clients take besides the conversation and the content:
    the model (the broker's default when absent), its params, and the ``Idempotency-Key`` (a
    new one when absent; a retry of the call reuses it)."""

    model: str | None
    params: dict[str, Any] | None
    idempotency_key: str | None


class ClientCore(Generic[H, S]):
    """What a client of one broker holds, and the steps of each of its calls.

    ``H`` is the face's HTTP client and ``S`` its event stream. Streams resume by themselves
    after a disconnect, from the last event they yielded; after ``max_attempts`` consecutive
    failures they raise ``ReconnectFailed``.
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
        http: H | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = wire.checked_token(token)
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        # A stream is silent for at most the keepalive interval (15 s by default); a read that
        # waits longer than read_timeout means the connection is dead.
        self._stream_timeout = httpx.Timeout(timeout, read=read_timeout)
        self._http: H = http or self._new_http(timeout)

    def _new_http(self, timeout: float) -> H:
        """The face's HTTP client, when the caller gave none."""
        raise NotImplementedError

    def _new_stream(self, path: str, tracker: StreamTracker, cid: str | None) -> S:
        """The face's stream of ``path``, or of the run of ``cid`` that ``tracker`` follows."""
        raise NotImplementedError

    def stream(self, cid: str, after: str | None = None) -> S:
        """Every event of the conversation after ``after`` (from the start when None), then
        live ones, forever. A ``Reset`` item means: drop what you have, a full replay follows."""
        return self._new_stream(f"{wire.conversation_path(cid)}/stream", StreamTracker(after), None)

    def stream_run(self, cid: str, run_id: str = "active", after: str | None = None) -> S:
        """One run's events, ending after its terminal event; nothing when no run is active."""
        return self._new_stream("", StreamTracker(after, run_id=run_id), cid)

    def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Steps[httpx.Response]:
        """One request; an answer that is no success, or none at all, is its ``BrokerError``."""
        headers = {**wire.auth_headers(self.token), **(headers or {})}
        try:
            response: httpx.Response = yield Request(method, path, headers, content)
        except httpx.TransportError as exc:
            raise BrokerUnavailable(self.base_url, type(exc).__name__) from exc
        if response.is_success:
            return response
        raise wire.error_of(response)

    def _send_steps(self, cid: str, content: str, options: SendOptions) -> Steps[MessageAccepted]:
        """Retried (with the same idempotency key, so never twice) when the broker does not
        answer or is briefly unavailable."""
        unknown = sorted(set(options) - set(SendOptions.__annotations__))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        body = wire.message_body(content, options.get("model"), options.get("params"))
        headers = wire.send_headers(self.token, options.get("idempotency_key"))
        path = f"{wire.conversation_path(cid)}/messages"
        for attempt in range(1, wire.SEND_ATTEMPTS + 1):
            try:
                response = yield from self._request("POST", path, content=body, headers=headers)
                return _accepted.decode(response.content)
            except BrokerError as exc:
                if attempt == wire.SEND_ATTEMPTS or not (exc.status == 0 or exc.status >= 500):
                    raise
                yield Sleep(exc.retry_after or 0.5 * attempt)
        raise AssertionError("unreachable")

    def _cancel_steps(self, cid: str, run_id: str | None, wait: bool) -> Steps[CancelState]:
        response = yield from self._request("POST", wire.cancel_path(cid, run_id, wait))
        return _cancel_state.decode(response.content)

    def _snapshot_steps(self, cid: str) -> Steps[Snapshot]:
        response = yield from self._request("GET", wire.conversation_path(cid))
        return _snapshot.decode(response.content)

    def _list_steps(self, limit: int | None, cursor: str | None) -> Steps[ConversationPage]:
        response = yield from self._request("GET", wire.list_path(limit, cursor))
        return _page.decode(response.content)

    def _delete_steps(self, cid: str) -> Steps[None]:
        yield from self._request("DELETE", wire.conversation_path(cid))

    def _models_steps(self) -> Steps[ModelList]:
        response = yield from self._request("GET", "/v1/models")
        return _models.decode(response.content)


# ----- a stream -----


class EventStreamCore(Generic[Client, It]):
    """A stream of typed events (``broker.core.events`` structs, ``Reset``, ``UnknownEvent``)
    that reconnects by itself. ``last_event_id`` is the id of the last event yielded: where a
    later stream can resume. ``It`` is the face's iterator of those items."""

    def __init__(
        self, client: Client, path: str, tracker: StreamTracker, *, cid: str | None = None
    ) -> None:
        self._client = client
        self._path = path
        self._cid = cid
        self._tracker = tracker
        self._events: It = self._items()

    @property
    def last_event_id(self) -> str | None:
        return self._tracker.last_event_id

    @property
    def run_id(self) -> str | None:
        return self._tracker.run_id

    def _items(self) -> It:
        """The face's iterator that performs ``_steps`` and hands on what they emit."""
        raise NotImplementedError

    def _url(self) -> str:
        if self._cid is not None:
            assert self._tracker.run_id is not None
            return f"{wire.run_path(self._cid, self._tracker.run_id)}/stream"
        return self._path

    def _steps(self) -> StreamSteps[None]:
        """Connect, follow, and connect again after every end or failure, from the last event
        handed on, until the stream is finished (a run's terminal event, a 204: no run)."""
        client, tracker = self._client, self._tracker
        backoff = Backoff(max_attempts=client.max_attempts, max_delay=client.max_backoff)
        while not tracker.finished:
            headers = wire.stream_headers(client.token, tracker.last_event_id)
            try:
                response: httpx.Response = yield OpenStream(
                    self._url(), headers, client._stream_timeout
                )
                if response.status_code == 204:
                    return
                if response.is_success:
                    delay = yield from self._follow(backoff)
                else:
                    delay = yield from self._refused(response, backoff)
                if delay is None:
                    return
                yield CloseStream()
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__} at {client.base_url}"
                try:
                    delay = backoff.after_failure(reason, tracker.last_event_id)
                except BrokerError as gave_up:
                    raise gave_up from exc
            yield Sleep(delay)

    def _follow(self, backoff: Backoff) -> StreamSteps[float | None]:
        """Hand on the events of an open stream; the delay before reconnecting once its body
        ends, or None when nothing more will come."""
        tracker = self._tracker
        backoff.connected()
        parser = SSEParser()
        delivered = 0
        while (chunk := (yield ReadChunk())) is not None:
            for sse in parser.feed(chunk):
                item = tracker.accept(sse)
                if item is not None:
                    delivered += 1
                    yield Emit(item)
                if tracker.finished:
                    return None
            if parser.retry_ms is not None:
                backoff.retry = parser.retry_ms / 1000
        if not delivered and (yield from self._run_is_over()):
            return None  # resumed after its terminal event: nothing more will come
        return backoff.after_end()

    def _refused(self, response: httpx.Response, backoff: Backoff) -> Steps[float]:
        """The delay before trying again after an error answer, or its ``BrokerError`` when
        trying again cannot help."""
        yield ReadBody()
        error = wire.error_of(response)
        if not wire.retriable(error):
            raise error
        return backoff.after_failure(str(error), self._tracker.last_event_id, error.retry_after)

    def _run_is_over(self) -> Steps[bool]:
        """A run's stream closed at once with nothing new: is that run over already?"""
        if self._cid is None or self._tracker.run_id in (None, "active"):
            return False
        snapshot = yield from self._client._snapshot_steps(self._cid)
        return snapshot.active_run_id != self._tracker.run_id


# ----- an answer -----


class AnswerCore(Generic[S, It]):
    """The text pieces of one run's answer, as they arrive. After the iteration: ``text``,
    ``reasoning`` and ``outcome`` (the terminal event). A failed run raises ``RunFailedError``.
    ``S`` is the face's event stream, ``It`` its iterator of text pieces."""

    def __init__(self, accepted: MessageAccepted, events: S) -> None:
        self.accepted = accepted
        self.run_id = accepted.run_id
        self.text = ""
        self.reasoning = ""
        self.outcome: RunCompleted | RunCancelled | RunFailedEvent | None = None
        self._events = events
        self._pieces: It = self._pieces_of_events()

    def _pieces_of_events(self) -> It:
        """The face's iterator of the pieces that ``_fold`` hands on."""
        raise NotImplementedError

    def _fold(self, event: StreamItem) -> str | None:
        """Add ``event`` to the answer; the text piece to hand on, if it brings one."""
        if isinstance(event, Delta) and event.run_id == self.run_id:
            if event.channel == "reasoning":
                self.reasoning += event.text
                return None
            self.text += event.text
            return event.text
        if isinstance(event, RunCompleted | RunCancelled | RunFailedEvent):
            if event.run_id == self.run_id:
                self.outcome = event
                if isinstance(event, RunFailedEvent):
                    raise RunFailedError(event.run_id, event.error.code, event.error.message)
        return None
