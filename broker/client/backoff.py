"""When to reconnect a stream: the server's ``retry:`` after a clean end, exponential backoff
with jitter after failures, and a limit on consecutive failures."""

from __future__ import annotations

import random

from broker.client.errors import ReconnectFailed


class Backoff:
    def __init__(self, *, max_attempts: int, max_delay: float, retry_ms: int = 1000) -> None:
        self.max_attempts = max_attempts
        self.max_delay = max_delay
        # The server's `retry:`: the pause before reconnecting after a stream simply ended.
        self.retry = retry_ms / 1000
        self.failures = 0

    def connected(self) -> None:
        """A stream opened: the count of consecutive failures starts again."""
        self.failures = 0

    def after_end(self) -> float:
        """The stream ended without an error (a front draining, a proxy timeout)."""
        return self.retry

    def after_failure(
        self, reason: str, last_event_id: str | None, retry_after: float | None = None
    ) -> float:
        """The delay before the next attempt; raises ReconnectFailed past the limit."""
        self.failures += 1
        if self.failures > self.max_attempts:
            raise ReconnectFailed(self.max_attempts, last_event_id, reason)
        ceiling = min(self.max_delay, max(self.retry, 0.1) * 2 ** (self.failures - 1))
        return max(random.uniform(ceiling / 2, ceiling), retry_after or 0.0)
