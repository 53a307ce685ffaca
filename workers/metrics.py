"""A worker's Prometheus metrics, in a registry the worker owns, served on its own port.

The server is a few lines on an anyio listener owned by the worker's task group (no thread,
nothing left behind at shutdown). The jobs queue's depth and the age of its oldest waiting job
are read from Redis at each scrape: they describe the queue every worker shares, so every
worker reports the same values (take the max across workers, not the sum).
"""

from __future__ import annotations

import logging

import anyio
import anyio.abc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from broker.core.metrics import redis_counters
from broker.engine import UNAVAILABLE
from broker.engine.queue import JobQueue

log = logging.getLogger(__name__)

# From a cached answer's first token to a slow reasoning model's; whole runs up to the limit.
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0)
_DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_HEAD_LIMIT = 8192
_READ_SECONDS = 5.0
_REFRESH_SECONDS = 2.0


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_started = Counter(
            "broker_runs_started_total", "Runs this worker started generating", registry=r
        )
        self._runs_ended = Counter(
            "broker_runs_ended_total",
            "Runs this worker ended, by final status and failure code (empty unless failed)",
            ["status", "code"],
            registry=r,
        )
        self.runs_active = Gauge(
            "broker_runs_active", "Jobs this worker holds right now", registry=r
        )
        self.time_to_first_token = Histogram(
            "broker_run_time_to_first_token_seconds",
            "From a worker starting a run to its first output appended to the stream",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.run_duration = Histogram(
            "broker_run_duration_seconds",
            "From a worker starting a run to its terminal event",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.jobs_waiting = Gauge(
            "broker_jobs_waiting",
            "Jobs queued that no worker has taken yet (the whole queue, read at scrape)",
            registry=r,
        )
        self.jobs_oldest_age = Gauge(
            "broker_jobs_oldest_age_seconds",
            "How long the oldest job no worker has taken has waited (0 when none waits)",
            registry=r,
        )
        self.leases_reclaimed = Counter(
            "broker_leases_reclaimed_total",
            "Jobs of a lost worker claimed by this one after their lease lapsed",
            registry=r,
        )
        self._provider_errors = Counter(
            "broker_provider_errors_total",
            "Model calls that ended in a failure, by failure code",
            ["code"],
            registry=r,
        )
        self.redis_errors, self.redis_reconnects = redis_counters(r)

    def run_ended(self, status: str, code: str) -> None:
        """Once per run: a label lookup here costs nothing next to the run."""
        self._runs_ended.labels(status, code).inc()

    def provider_error(self, code: str) -> None:
        self._provider_errors.labels(code).inc()

    async def refresh_queue(self, queue: JobQueue) -> None:
        """Read the queue's depth and its oldest waiting job from every shard."""
        depth = await queue.depth()
        self.jobs_waiting.set(depth.waiting)
        self.jobs_oldest_age.set(depth.oldest_age_seconds)


async def listen(host: str, port: int) -> anyio.abc.Listener[anyio.abc.SocketStream]:
    """Bound at start-up, before any job is taken: a port in use stops the worker at once."""
    try:
        return await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as exc:
        raise SystemExit(
            f"BROKER_WORKER_METRICS_PORT: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None


async def serve(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    metrics: WorkerMetrics,
    queue: JobQueue,
) -> None:
    """Answer ``GET /metrics`` with the text exposition; anything else gets 404."""

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            head = b""
            with anyio.move_on_after(_READ_SECONDS):
                while b"\r\n\r\n" not in head and len(head) < _HEAD_LIMIT:
                    try:
                        head += await stream.receive(4096)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
            request_line = head.split(b"\r\n", 1)[0].split()
            if len(request_line) < 2 or request_line[0] != b"GET":
                await _respond(stream, b"405 Method Not Allowed", b"text/plain", b"GET only\n")
                return
            if request_line[1].split(b"?", 1)[0] != b"/metrics":
                await _respond(stream, b"404 Not Found", b"text/plain", b"see /metrics\n")
                return
            with anyio.move_on_after(_REFRESH_SECONDS):
                try:
                    await metrics.refresh_queue(queue)
                except UNAVAILABLE:
                    metrics.redis_errors.inc()  # the queue's gauges keep their last values
            body = generate_latest(metrics.registry)
            await _respond(stream, b"200 OK", CONTENT_TYPE_LATEST.encode(), body)

    async with listener:
        await listener.serve(answer)


async def _respond(
    stream: anyio.abc.SocketStream, status: bytes, content_type: bytes, body: bytes
) -> None:
    head = (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    try:
        await stream.send(head + body)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
