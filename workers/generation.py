"""One run's generation: provider chunks in, coalesced delta events out to Redis.

The provider runs in its own task and hands chunks over a small buffer; this side gathers text
for up to the coalescing window and appends it in one write. Each append also reads the run's
status, so a cancel marked in Redis stops the run at its next write even if the control
message was lost.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import aclosing

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from broker.events import Channel, Delta, encode
from broker.jobs import Job
from broker.store import Store
from workers.providers.base import Chunk, Failure, Finish, GenerationRequest, Provider, Text

log = logging.getLogger("workers.generation")


class CancelRequested(Exception):
    """The run was marked for cancel in Redis."""


class RunGone(Exception):
    """Something else ended the run; it must not write anything more."""


async def _pump(provider: Provider, request: GenerationRequest, send: MemoryObjectSendStream[Chunk]) -> None:
    async with send:
        try:
            async with aclosing(provider.stream(request)) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    await send.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        except Exception as exc:
            log.exception("provider failed")
            await send.send(Failure("provider_error", f"the model call failed: {type(exc).__name__}"))


class Generation:
    def __init__(
        self,
        store: Store,
        job: Job,
        request: GenerationRequest,
        provider: Provider,
        coalesce_seconds: float,
    ) -> None:
        self._store = store
        self._job = job
        self._request = request
        self._provider = provider
        self._window = coalesce_seconds
        self._channel: Channel = "content"
        self._parts: list[tuple[Channel, list[str]]] = []
        self._deadline = math.inf
        self.appends = 0

    async def run(self) -> Finish | Failure:
        """Relay the provider's output; returns how it ended, raises if the run was stopped."""
        request = self._request
        send, receive = anyio.create_memory_object_stream[Chunk](64)
        stopped: Exception | None = None
        with receive:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_pump, self._provider, request, send)
                try:
                    outcome = await self._relay(receive)
                except Exception as exc:
                    # Raised past the task group, it would come out wrapped in an ExceptionGroup.
                    stopped = exc
                finally:
                    # Abandons the upstream call when the run stops before the provider did.
                    tasks.cancel_scope.cancel()
        if stopped is not None:
            raise stopped
        return outcome

    async def _relay(self, receive: MemoryObjectReceiveStream[Chunk]) -> Finish | Failure:
        while True:
            chunk = await self._next(receive)
            if chunk is None:
                await self._flush()
            elif isinstance(chunk, Text):
                self._add(chunk)
                if self._window <= 0:
                    await self._flush()
            else:
                await self._flush()
                return chunk

    async def _next(self, receive: MemoryObjectReceiveStream[Chunk]) -> Chunk | None:
        """The next chunk, or None when the coalescing window closes first.

        Per token, the cheapest path that is correct: what is buffered already, else a plain
        wait while nothing is pending, and a timed wait only while text waits to be flushed.
        """
        try:
            try:
                return receive.receive_nowait()
            except anyio.WouldBlock:
                pass
            if self._deadline == math.inf:
                return await receive.receive()
            with anyio.move_on_after(self._deadline - time.monotonic()):
                return await receive.receive()
            return None
        except anyio.EndOfStream:
            return Failure("provider_error", "the model's stream ended without finishing")

    def _add(self, chunk: Text) -> None:
        if not chunk.text:
            return
        if self._parts and self._parts[-1][0] == chunk.channel:
            self._parts[-1][1].append(chunk.text)
        else:
            self._parts.append((chunk.channel, [chunk.text]))
        if self._deadline == math.inf:
            self._deadline = time.monotonic() + self._window

    async def _flush(self) -> None:
        self._deadline = math.inf
        if not self._parts:
            return
        run_id = self._job.run_id
        events = [encode(Delta(run_id, "".join(texts), channel)) for channel, texts in self._parts]
        self._parts = []
        self.appends += 1
        status = await self._store.append(self._job.conversation_id, run_id, self.appends, events)
        if status == "cancelling":
            raise CancelRequested
        if status != "running":
            raise RunGone(status)
