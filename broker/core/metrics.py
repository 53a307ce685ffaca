"""The metrics every process has, fronts and workers alike, defined once so their names and
meanings cannot drift apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


def redis_counters(registry: CollectorRegistry) -> tuple[Counter, Counter]:
    """Redis errors and subscription reconnects, registered in ``registry``."""
    errors = Counter(
        "broker_redis_errors_total",
        "Redis commands that failed as unreachable (connection lost, timeout, cluster down)",
        registry=registry,
    )
    reconnects = Counter(
        "broker_redis_reconnects_total",
        "Subscription connections to Redis lost and opened again",
        registry=registry,
    )
    return errors, reconnects
