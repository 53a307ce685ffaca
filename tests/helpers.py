"""Small predicates and constructors the scenario tests share."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from broker.core.settings import Settings
from broker.engine.keys import Keys
from tests.sse import Event


def new_cid(label: str = "c") -> str:
    return f"{label}_{uuid.uuid4().hex[:16]}"


def terminal_of(run_id: str) -> Callable[[Event], bool]:
    """Stop condition: the run's terminal event."""
    return lambda event: event.is_terminal and event.run_id == run_id


def nth_delta(n: int) -> Callable[[Event], bool]:
    """Stop condition: the n-th delta seen by this predicate."""
    seen = 0

    def stop(event: Event) -> bool:
        nonlocal seen
        if event.event == "delta":
            seen += 1
        return seen >= n

    return stop


def job_streams(prefix: str, cluster: bool = False) -> list[str]:
    """The jobs queue's streams, as the broker names them with its default shard count."""
    return Keys(prefix, Settings(redis_cluster=cluster).job_shard_count).job_streams
