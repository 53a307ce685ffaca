"""One run's generation: provider chunks in, coalesced delta events out to Redis.

The run reads the provider's stream directly and gathers text; a timer task appends what was
gathered once the coalescing window closes, so a token costs one step of the provider's
iterator and no wake-up of another task. Each append also reads the run's status, so a cancel
marked in Redis stops the run at its next write even if the control message was lost.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import aclosing

import anyio

from broker.core.events import Channel, Delta, encode
from broker.core.jobs import Job
from broker.core.store import Store
from workers.providers.base import Failure, Finish, GenerationRequest, Provider, Text

log = logging.getLogger("workers.generation")


class CancelRequested(Exception):
    """The run was marked for cancel in Redis."""


class RunGone(Exception):
    """Something else ended the run; it must not write anything more."""


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
        self._parts: list[tuple[Channel, list[str]]] = []
        self._deadline = math.inf  # when the gathered text must be appended
        self._armed = anyio.Event()  # set when text starts waiting: the timer starts counting
        self._writing = anyio.Lock()  # appends go out one at a time, in sequence order
        self._timer_error: Exception | None = None
        self.appends = 0

    async def run(self) -> Finish | Failure:
        """Relay the provider's output; returns how it ended, raises if the run was stopped."""
        stopped: Exception | None = None
        outcome: Finish | Failure | None = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._flush_on_time, tasks.cancel_scope)
            try:
                outcome = await self._relay()
                await self._flush()
            except Exception as exc:
                # Raised past the task group, it would come out wrapped in an ExceptionGroup.
                stopped = exc
            finally:
                tasks.cancel_scope.cancel()
        if stopped is not None:
            raise stopped
        if self._timer_error is not None:
            raise self._timer_error
        assert outcome is not None
        return outcome

    async def _relay(self) -> Finish | Failure:
        """Gather the provider's text until it finishes; closing the stream abandons the call."""
        try:
            async with aclosing(self._provider.stream(self._request)) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    if not isinstance(chunk, Text):
                        return chunk
                    self._add(chunk)
                    if self._window <= 0:
                        await self._flush()
        except (CancelRequested, RunGone):
            raise
        except Exception as exc:
            log.exception("provider failed")
            return Failure("provider_error", f"the model call failed: {type(exc).__name__}")
        return Failure("provider_error", "the model's stream ended without finishing")

    async def _flush_on_time(self, run_scope: anyio.CancelScope) -> None:
        """Append the gathered text when its window closes; a stop it learns of ends the run."""
        try:
            while True:
                await self._armed.wait()
                self._armed = anyio.Event()
                await anyio.sleep(max(0.0, self._deadline - time.monotonic()))
                await self._flush()
        except (CancelRequested, RunGone) as exc:
            self._timer_error = exc
            run_scope.cancel()

    def _add(self, chunk: Text) -> None:
        if not chunk.text:
            return
        if self._parts and self._parts[-1][0] == chunk.channel:
            self._parts[-1][1].append(chunk.text)
            return
        if not self._parts and self._window > 0:
            self._deadline = time.monotonic() + self._window
            self._armed.set()
        self._parts.append((chunk.channel, [chunk.text]))

    async def _flush(self) -> None:
        async with self._writing:
            if not self._parts:
                return
            parts, self._parts = self._parts, []
            run_id = self._job.run_id
            events = [encode(Delta(run_id, "".join(texts), channel)) for channel, texts in parts]
            self.appends += 1
            status = await self._store.append(
                self._job.conversation_id, run_id, self.appends, events
            )
        if status == "cancelling":
            raise CancelRequested
        if status != "running":
            raise RunGone(status)
