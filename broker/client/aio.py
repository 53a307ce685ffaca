"""``AsyncBrokerClient``: the asyncio (anyio) client, on ``httpx.AsyncClient``. The same calls
as ``BrokerClient``, awaited; streams are async iterators.

What each call does is written once, as steps, in ``broker.client.core``; this module only
performs those steps, awaiting, and speaks the async iterator and context manager protocols.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar, Unpack

import anyio
import httpx

from broker.client import core, effects
from broker.client.tracking import StreamItem, StreamTracker
from broker.core.bodies import CancelState, ConversationPage, MessageAccepted, ModelList, Snapshot

T = TypeVar("T")


class AsyncBrokerClient(core.ClientCore[httpx.AsyncClient, "AsyncEventStream"]):
    """An asynchronous client of one broker; see ``BrokerClient`` for the behaviour."""

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBrokerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(
        self, cid: str, content: str, **options: Unpack[core.SendOptions]
    ) -> MessageAccepted:
        """Post a message; see ``BrokerClient.send``."""
        return await self._perform(self._send_steps(cid, content, options))

    async def cancel(
        self, cid: str, run_id: str | None = None, *, wait: bool = False
    ) -> CancelState:
        return await self._perform(self._cancel_steps(cid, run_id, wait))

    async def snapshot(self, cid: str) -> Snapshot:
        return await self._perform(self._snapshot_steps(cid))

    async def list_conversations(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> ConversationPage:
        """One page of the caller's conversations, newest activity first; pass its
        ``next_cursor`` as ``cursor`` for the next page (None: that was the last)."""
        return await self._perform(self._list_steps(limit, cursor))

    async def delete_conversation(self, cid: str) -> None:
        """Delete the conversation and everything stored of it; its active run is cancelled
        first and its open streams end with ``StreamEndedError`` ``conversation_deleted``."""
        await self._perform(self._delete_steps(cid))

    async def models(self) -> ModelList:
        return await self._perform(self._models_steps())

    async def ask(self, cid: str, content: str, **options: Unpack[core.SendOptions]) -> AsyncAnswer:
        """Send, and return the answer's text pieces as an async iterator."""
        accepted = await self._perform(self._send_steps(cid, content, options))
        return AsyncAnswer(accepted, self.stream_run(cid, accepted.run_id))

    def _new_http(self, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout, trust_env=False)

    def _new_stream(self, path: str, tracker: StreamTracker, cid: str | None) -> AsyncEventStream:
        return AsyncEventStream(self, path, tracker, cid=cid)

    async def _perform(self, steps: effects.Steps[T]) -> T:
        """The result of a call's steps, performed one after the other."""
        run = effects.Run(steps)
        async with _Performer(self._http) as performer:
            while (effect := run.next()) is not None:
                await performer.perform(effect, run)
        return run.result


class AsyncEventStream(core.EventStreamCore[AsyncBrokerClient, AsyncGenerator[StreamItem, None]]):
    """An async iterator of typed events that reconnects by itself; see ``EventStream``."""

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> StreamItem:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _items(self) -> AsyncGenerator[StreamItem, None]:
        run = effects.Run(self._steps())
        async with _Performer(self._client._http) as performer:
            while (effect := run.next()) is not None:
                if isinstance(effect, effects.Emit):
                    yield effect.item
                else:
                    await performer.perform(effect, run)


class AsyncAnswer(core.AnswerCore[AsyncEventStream, AsyncGenerator[str, None]]):
    """The text pieces of one run's answer; see ``Answer``."""

    def __aiter__(self) -> AsyncAnswer:
        return self

    async def __anext__(self) -> str:
        return await anext(self._pieces)

    async def aclose(self) -> None:
        await self._pieces.aclose()
        await self._events.aclose()

    async def _pieces_of_events(self) -> AsyncGenerator[str, None]:
        async for event in self._events:
            if (piece := self._fold(event)) is not None:
                yield piece


class _Performer(effects.PerformerCore[httpx.AsyncClient, AsyncIterator[bytes]]):
    """Does the I/O that steps ask for, on one ``httpx.AsyncClient``."""

    async def __aenter__(self) -> _Performer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def perform(self, effect: effects.Effect | effects.Emit, run: effects.Run[Any]) -> None:
        """Do what ``effect`` asks; ``run`` gets the result, or the exception it raised."""
        try:
            run.reply(await self._do(effect))
        except Exception as exc:
            await self._close()
            run.fail(exc)

    async def _do(self, effect: effects.Effect | effects.Emit) -> Any:
        match effect:
            case effects.Request(method, path, headers, content):
                return await self._http.request(method, path, headers=headers, content=content)
            case effects.OpenStream(path, headers, timeout):
                request = self._http.build_request("GET", path, headers=headers, timeout=timeout)
                self._response = await self._http.send(request, stream=True)
                self._chunks = self._response.aiter_bytes()
                return self._response
            case effects.ReadBody() if self._response is not None:
                return await self._response.aread()
            case effects.ReadChunk() if self._chunks is not None:
                return await anext(self._chunks, None)
            case effects.CloseStream():
                return await self._close()
            case effects.Sleep(seconds):
                return await anyio.sleep(seconds)
        raise AssertionError(f"no I/O to do for {effect!r}")

    async def _close(self) -> None:
        if self._response is not None:
            await self._response.aclose()
            self._response = self._chunks = None
