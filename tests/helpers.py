"""Small predicates and constructors the scenario tests share."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from redis.cluster import RedisCluster

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


def outbox_streams(prefix: str, cluster: bool = False) -> list[str]:
    """The outbox's streams, as the broker names them with its default shard count."""
    return Keys(prefix, Settings(redis_cluster=cluster).job_shard_count).outbox_streams


def outbox_length(redis_client: Any, prefix: str) -> int:
    """Notices in the outbox, over all its shards."""
    streams = outbox_streams(prefix, isinstance(redis_client, RedisCluster))
    return sum(redis_client.xlen(stream) for stream in streams)


def outbox_pending(redis_client: Any, prefix: str, group: str) -> int:
    """Notices handed to ``group``'s consumers and not yet acknowledged, over all shards."""
    return sum(redis_client.xpending(stream, group)["pending"] for stream in outbox_streams(prefix))
