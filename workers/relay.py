"""One run's generation: output in, coalesced events out to Redis.

Whatever produces the output (a provider's stream, read here directly, or an application's
generator calling ``add``), it is gathered in the producer's own task; a timer task appends
what was gathered once the coalescing window closes, so a token costs one step of the
producer and no wake-up of another task. Consecutive text of one channel, and consecutive
argument pieces of one tool call, become one event; everything keeps its order. Each append
also reads the run's status, so a cancel marked in Redis stops the run at its next write even
if the control message was lost, and carries the run's fence, so a run another worker took over
stops at its next write too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import anyio
from anyio.lowlevel import checkpoint_if_cancelled

from broker.core.events import Data, Delta, ToolCall, ToolResult, encode
from broker.core.jobs import Job
from broker.engine.conversations import Appended, Conversations, Fence
from workers.providers.base import (
    DataValue,
    Failure,
    Finish,
    Output,
    Text,
    ToolCallDelta,
    ToolCallWhole,
    ToolOutput,
)

log = logging.getLogger(__name__)

Outcome = Finish | Failure
# The key of a gathered piece of output that is a whole event, never merged with the next.
_WHOLE = object()


class CancelRequested(Exception):
    """The run was marked for cancel in Redis."""


class RunGone(Exception):
    """Something else ended the run; it must not write anything more."""


class Fenced(RunGone):
    """Another worker took the run over (this one was paused past its lease)."""


class Generation:
    def __init__(
        self,
        conversations: Conversations,
        job: Job,
        fence: Fence,
        coalesce_seconds: float,
        *,
        first_output: Callable[[], None] | None = None,
    ) -> None:
        """``first_output`` is called once the run's first output is in the stream."""
        self._conversations = conversations
        self._first_output = first_output
        self._job = job
        self._fence = fence
        self._window = coalesce_seconds
        # Gathered output in order: (key, pieces). The key is the channel for text, (call id,
        # name) for a tool call's argument pieces, _WHOLE for encoded whole events.
        self._parts: list[tuple[object, list]] = []
        self._deadline = math.inf  # when the gathered output must be appended
        self._armed = anyio.Event()  # set when output starts waiting: the timer starts counting
        self._writing = anyio.Lock()  # appends go out one at a time, in sequence order
        self._timer_error: Exception | None = None
        self._ttl_renewed = -math.inf  # the first append renews the conversation's idle TTL
        self.appends = 0

    async def run(self, produce: Callable[[Generation], Awaitable[Outcome]]) -> Outcome:
        """Run ``produce`` (which feeds this generation) to its outcome, appending as it goes.

        Raises ``CancelRequested`` or ``RunGone`` when the run was stopped meanwhile.
        """
        stopped: Exception | None = None
        outcome: Outcome | None = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._flush_on_time, tasks.cancel_scope)
            try:
                outcome = await produce(self)
                await self.flush()
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

    async def relay(self, chunks: AsyncIterator[Output | Finish | Failure]) -> Outcome:
        """Gather a model's output until it finishes; closing the stream abandons the call."""
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    if type(chunk) is Text:
                        self._gather(chunk.channel, chunk.text)
                    elif isinstance(chunk, (Finish, Failure)):
                        return chunk
                    else:
                        self.add(chunk)
                    if self._window <= 0:
                        await self.flush()
        except (CancelRequested, RunGone):
            raise
        except Exception as exc:
            log.exception("provider failed")
            return Failure("provider_error", f"the model call failed: {type(exc).__name__}")
        return Failure("provider_error", "the model's stream ended without finishing")

    def add(self, output: Output) -> None:
        """Gather one piece of output; it is appended when the window closes (see ``flush``)."""
        run_id = self._job.run_id
        if isinstance(output, Text):
            self._gather(output.channel, output.text)
        elif isinstance(output, ToolCallDelta):
            self._gather((output.call_id, output.name), output.arguments_delta)
        elif isinstance(output, ToolCallWhole):
            self._put(ToolCall(run_id, output.call_id, output.name, arguments=output.arguments))
        elif isinstance(output, ToolOutput):
            self._put(ToolResult(run_id, output.call_id, output.result, output.is_error))
        elif isinstance(output, DataValue):
            self._put(Data(run_id, output.name, output.value))
        else:
            raise TypeError(f"not run output: {type(output).__name__}")

    async def emitted(self) -> None:
        """After an ``add`` from an application's generator: append when due, let a cancel in.

        Normally the timer task appends; a generator that emits in a loop without ever
        awaiting anything else would starve it (and every other task of the worker), so once
        the window has passed, the append happens here, and with it a trip to the event loop.
        Otherwise no task switch: a cancelled run raises here, a running one just returns.
        """
        if self._window <= 0 or (self._parts and time.monotonic() >= self._deadline):
            await self.flush()
        await checkpoint_if_cancelled()

    def _gather(self, key: object, piece: str) -> None:
        if not piece:
            return
        parts = self._parts
        if parts and parts[-1][0] == key:
            parts[-1][1].append(piece)
            return
        if not parts and self._window > 0:
            self._arm()
        parts.append((key, [piece]))

    def _put(self, event: ToolCall | ToolResult | Data) -> None:
        # Encoded now, so a value that is not JSON fails where it was emitted.
        encoded = encode(event)
        parts = self._parts
        if parts and parts[-1][0] is _WHOLE:
            parts[-1][1].append(encoded)
            return
        if not parts and self._window > 0:
            self._arm()
        parts.append((_WHOLE, [encoded]))

    def _arm(self) -> None:
        # Windows close on ticks common to the worker's runs (multiples of the window on the
        # monotonic clock), so the appends of runs with output waiting fall due together and
        # go to Redis in one pipeline (``Conversations.append``).
        window = self._window
        self._deadline = (time.monotonic() // window + 1) * window
        self._armed.set()

    async def _flush_on_time(self, run_scope: anyio.CancelScope) -> None:
        """Append the gathered output when its window closes; a stop it learns of ends the run."""
        try:
            while True:
                await self._armed.wait()
                self._armed = anyio.Event()
                await anyio.sleep(max(0.0, self._deadline - time.monotonic()))
                await self.flush()
        except (CancelRequested, RunGone) as exc:
            self._timer_error = exc
            run_scope.cancel()

    async def flush(self) -> None:
        """Append everything gathered so far, as the run's next write."""
        async with self._writing:
            if not self._parts:
                return
            parts, self._parts = self._parts, []
            run_id = self._job.run_id
            events: list[tuple[str, bytes]] = []
            for key, pieces in parts:
                if key is _WHOLE:
                    events += pieces
                elif isinstance(key, str):
                    text = "".join(pieces)
                    events.append(encode(Delta(run_id, text, key)))  # type: ignore[arg-type]
                else:
                    call_id, name = key  # type: ignore[misc]
                    events.append(
                        encode(ToolCall(run_id, call_id, name, arguments_delta="".join(pieces)))
                    )
            self.appends += 1
            now = time.monotonic()
            renew = now - self._ttl_renewed >= self._conversations.ttl_refresh_seconds
            appended = await self._conversations.append(
                self._job.conversation_id,
                run_id,
                self._fence,
                self.appends,
                events,
                refresh_ttl=renew,
            )
            if renew:
                self._ttl_renewed = now
            if self.appends == 1 and self._first_output is not None:
                self._first_output()
        if appended is Appended.CANCEL_REQUESTED:
            raise CancelRequested
        if appended is Appended.FENCED:
            raise Fenced
        if appended is Appended.ENDED:
            raise RunGone
