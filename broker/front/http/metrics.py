"""A front process's Prometheus metrics, in a registry the app owns, and ``GET /metrics``.

Every labelled child that an event or a request touches is bound once (at start, or the first
time its label values appear), so counting costs one increment, never a label lookup per event.
Labels are low-cardinality by construction: a route is its path template, never the path.
"""

from __future__ import annotations

import hmac

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from broker.core.errors import UNAUTHORIZED
from broker.core.metrics import redis_counters
from broker.front.http.errors import error_response

# Latency of a request's answer head, from a fast 404 to a slow first Redis read under load.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STREAM_END_REASONS = (
    "client_gone",
    "terminal",
    "drain",
    "token_expired",
    "deleted",
    "redis_unavailable",
    "error",
)


class FrontMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.streams_open = Gauge(
            "broker_sse_streams_open", "SSE streams this front serves now", registry=r
        )
        events = Counter(
            "broker_sse_events_delivered_total",
            "Stored events written to SSE clients, read back from Redis (replay) or live",
            ["mode"],
            registry=r,
        )
        self.events_live = events.labels("live")
        self.events_replay = events.labels("replay")
        self.resets = Counter(
            "broker_sse_resets_total",
            "reset events sent: a client's position was no longer (or never) in the stream",
            registry=r,
        )
        self.fell_behind = Counter(
            "broker_sse_fell_behind_total",
            "Times a client fell too far behind the live path and switched to catch-up reads",
            registry=r,
        )
        ended = Counter(
            "broker_sse_streams_ended_total",
            "SSE streams ended, by why they ended",
            ["reason"],
            registry=r,
        )
        self.streams_ended = {reason: ended.labels(reason) for reason in STREAM_END_REASONS}
        self._requests = Counter(
            "broker_http_requests_total",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self._latency = Histogram(
            "broker_http_request_duration_seconds",
            "Time from a request's arrival to its answer's status and headers (for an SSE "
            "stream: until it opened)",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_errors, self.redis_reconnects = redis_counters(r)
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request; its children are bound the first time they appear."""
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(
                route, method, str(status)
            )
        counter.inc()
        latency = self._latency_children.get(key[:2])
        if latency is None:
            latency = self._latency_children[key[:2]] = self._latency.labels(route, method)
        latency.observe(seconds)

    def refused(self, status: int) -> None:
        """Count an answer the server protocol gave below the app (431, 408, 400, 501)."""
        self.request("unmatched", "other", status, 0.0)

    def stream_ended(self, reason: str) -> None:
        self.streams_ended.get(reason, self.streams_ended["error"]).inc()


async def metrics_endpoint(request: Request) -> Response:
    """The text exposition. Open unless BROKER_METRICS_TOKEN is set: a scraper has no user's
    JWT, and nothing here names a user or a conversation."""
    services = request.state.services
    expected = services.settings.metrics_token
    if expected:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.encode()
        ):
            return error_response(
                UNAUTHORIZED,
                "send the BROKER_METRICS_TOKEN as 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
