"""``BrokerClient``: the blocking client, on ``httpx.Client``.

What each call does is written once, as steps, in ``broker.client.core``; this module only
performs those steps, blocking, and speaks the iterator and context manager protocols.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import Any, TypeVar, Unpack

import httpx

from broker.client import core, effects
from broker.client.tracking import StreamItem, StreamTracker
from broker.core.bodies import CancelState, ConversationPage, MessageAccepted, ModelList, Snapshot

T = TypeVar("T")


class BrokerClient(core.ClientCore[httpx.Client, "EventStream"]):
    """A blocking client of one broker.

    Streams resume by themselves after a disconnect, from the last event they yielded; after
    ``max_attempts`` consecutive failures they raise ``ReconnectFailed``. Use it as a context
    manager, or call ``close()``.
    """

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, cid: str, content: str, **options: Unpack[core.SendOptions]) -> MessageAccepted:
        """Post a message; its run starts in a worker. Retried (with the same idempotency key,
        so never twice) when the broker does not answer or is briefly unavailable."""
        return self._perform(self._send_steps(cid, content, options))

    def cancel(self, cid: str, run_id: str | None = None, *, wait: bool = False) -> CancelState:
        """Stop a run (the active one by default); with ``wait``, return once it has ended."""
        return self._perform(self._cancel_steps(cid, run_id, wait))

    def snapshot(self, cid: str) -> Snapshot:
        """The merged conversation; stream after its ``last_event_id`` to follow it."""
        return self._perform(self._snapshot_steps(cid))

    def list_conversations(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> ConversationPage:
        """One page of the caller's conversations, newest activity first; pass its
        ``next_cursor`` as ``cursor`` for the next page (None: that was the last)."""
        return self._perform(self._list_steps(limit, cursor))

    def delete_conversation(self, cid: str) -> None:
        """Delete the conversation and everything stored of it; its active run is cancelled
        first and its open streams end with ``StreamEndedError`` ``conversation_deleted``."""
        self._perform(self._delete_steps(cid))

    def models(self) -> ModelList:
        return self._perform(self._models_steps())

    def ask(self, cid: str, content: str, **options: Unpack[core.SendOptions]) -> Answer:
        """Send, then iterate the answer's text pieces until the run ends."""
        accepted = self._perform(self._send_steps(cid, content, options))
        return Answer(accepted, self.stream_run(cid, accepted.run_id))

    def _new_http(self, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    def _new_stream(self, path: str, tracker: StreamTracker, cid: str | None) -> EventStream:
        return EventStream(self, path, tracker, cid=cid)

    def _perform(self, steps: effects.Steps[T]) -> T:
        """The result of a call's steps, performed one after the other."""
        run = effects.Run(steps)
        with _Performer(self._http) as performer:
            while (effect := run.next()) is not None:
                performer.perform(effect, run)
        return run.result


class EventStream(core.EventStreamCore[BrokerClient, Generator[StreamItem, None, None]]):
    """An iterator of typed events (``broker.core.events`` structs, ``Reset``,
    ``UnknownEvent``) that reconnects by itself. ``last_event_id`` is the id of the last event
    yielded: where a later stream can resume."""

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

    def _items(self) -> Generator[StreamItem, None, None]:
        run = effects.Run(self._steps())
        with _Performer(self._client._http) as performer:
            while (effect := run.next()) is not None:
                if isinstance(effect, effects.Emit):
                    yield effect.item
                else:
                    performer.perform(effect, run)


class Answer(core.AnswerCore[EventStream, Generator[str, None, None]]):
    """The text pieces of one run's answer, as they arrive. After the iteration: ``text``,
    ``reasoning`` and ``outcome`` (the terminal event). A failed run raises ``RunFailedError``."""

    def __iter__(self) -> Answer:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()
        self._events.close()

    def _pieces_of_events(self) -> Generator[str, None, None]:
        for event in self._events:
            if (piece := self._fold(event)) is not None:
                yield piece


class _Performer(effects.PerformerCore[httpx.Client, Iterator[bytes]]):
    """Does the I/O that steps ask for, on one ``httpx.Client``."""

    def __enter__(self) -> _Performer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def perform(self, effect: effects.Effect | effects.Emit, run: effects.Run[Any]) -> None:
        """Do what ``effect`` asks; ``run`` gets the result, or the exception it raised."""
        try:
            run.reply(self._do(effect))
        except Exception as exc:
            self._close()
            run.fail(exc)

    def _do(self, effect: effects.Effect | effects.Emit) -> Any:
        match effect:
            case effects.Request(method, path, headers, content):
                return self._http.request(method, path, headers=headers, content=content)
            case effects.OpenStream(path, headers, timeout):
                request = self._http.build_request("GET", path, headers=headers, timeout=timeout)
                self._response = self._http.send(request, stream=True)
                self._chunks = self._response.iter_bytes()
                return self._response
            case effects.ReadBody() if self._response is not None:
                return self._response.read()
            case effects.ReadChunk() if self._chunks is not None:
                return next(self._chunks, None)
            case effects.CloseStream():
                return self._close()
            case effects.Sleep(seconds):
                return time.sleep(seconds)
        raise AssertionError(f"no I/O to do for {effect!r}")

    def _close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = self._chunks = None
