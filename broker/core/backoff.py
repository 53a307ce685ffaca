"""The wait between retries of something that failed: doubling from a first delay up to a cap,
and starting over once it succeeds (the job, outbox and subscription readers, the tap, the
live path's subscription connections)."""

from __future__ import annotations

import anyio


class Backoff:
    __slots__ = ("_cap", "_first", "delay")

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self._first = first
        self._cap = cap
        self.delay = first  # the next wait, for the log line that announces it

    async def wait(self) -> None:
        """Sleep the current delay, then double it, up to the cap."""
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, self._cap)

    def reset(self) -> None:
        """It worked: the next failure waits the first delay again."""
        self.delay = self._first
